"""A unit's randomness is a function of the unit alone (DESIGN.md, Scale): a randomised defense,
alone or inside a composition, draws the same numbers for a batch whichever units ran before it
on the same worker, so a Ray actor that ran other batches first gives the local run's result."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from medrobust.execution.pixels import from_stored
from medrobust.execution.units import ModelRef, Unit, Workbench


@dataclass
class DefendUnit(Unit):
    """The defended images of one batch, as the model behind ``ref`` sees them."""

    ref: ModelRef = ModelRef()
    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1), np.uint8))

    def run(self, bench: Workbench) -> dict[str, np.ndarray]:
        with torch.no_grad():
            return {"x": bench.model(self.ref).defend(from_stored(self.images).to(bench.device)).numpy()}


def _batch(start: int) -> np.ndarray:
    return np.random.default_rng(start).integers(0, 256, (4, 8, 8), dtype=np.uint8)


@pytest.mark.parametrize("defense", ["tvm", "jpeg+tvm", "tvm+median", "bits+tvm:drop_prob=0.3"])
def test_a_batch_draws_the_same_whatever_ran_before_it(linear_classifier, defense):
    ref = ModelRef(defense=defense)
    first, second = (DefendUnit(seed=0, start=s, ref=ref, images=_batch(s)) for s in (0, 4))

    busy = Workbench({"model": linear_classifier(0)}, torch.device("cpu"))
    busy.execute(first)
    after_another = busy.execute(second)["x"]
    busy.execute(first)
    again = busy.execute(second)["x"]
    alone = Workbench({"model": linear_classifier(0)}, torch.device("cpu")).execute(second)["x"]

    np.testing.assert_array_equal(after_another, alone)
    np.testing.assert_array_equal(again, alone)
    # the draws differ between batches (the test would pass trivially on a fixed mask)
    shifted = DefendUnit(seed=0, start=8, ref=ref, images=_batch(4))
    assert not np.array_equal(Workbench({"model": linear_classifier(0)}, torch.device("cpu")).execute(shifted)["x"],
                              alone)
