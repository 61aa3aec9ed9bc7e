"""What ``medrobust guard serve`` was asked to serve, as plain JSON, and the guard built from it.

The command line turns its options into a :class:`GuardSpec`; :func:`build_guard` makes the
:class:`~medrobust.layer.guard.Guard` through the public layer (``mr.guard.from_run`` or
``mr.guard``). A server with several worker processes hands the spec to each of them (an
environment variable holding its JSON), and each builds its own guard: one model per process,
loaded once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

SPEC_VARIABLE = "MEDROBUST_GUARD_SPEC"
"""The environment variable that carries the spec to each worker process."""


@dataclass
class GuardSpec:
    """The guard to serve and how the server runs it.

    Args:
        run: a finished run folder (``mr.guard.from_run``), or None.
        model: a model file or folder (``mr.guard``), or None.
        contract: the contract options of a model that is not a medrobust checkpoint (``classes``,
            ``input_size``, ``intensity``...), None where not given.
        defense: the defense spec (``--model``: None means the guard's default; ``""`` none), or
            which of the run's defenses (``--run``).
        detectors: detector specs (``--model``); None means the guard's default.
        fpr: the detectors' target false positive rate.
        calibration: clean images to calibrate on, or None.
        on_flag: ``abstain`` or ``warn``.
        device: where the model runs.
        data_dir: the service's data directory whose tokens authorise requests, or None (``--no-auth``).
        watch: the query-attack watch's settings (``QueryWatch`` keyword arguments), or None for no watch.
        limits: ``ServiceLimits`` fields that differ from the guard server's defaults.
        threads: CPU threads of the process's model (``torch.set_num_threads``), None to leave
            torch's default (every core). ``--workers N`` shares the cores among the processes:
            N processes of every core each contend for them.
    """

    run: str | None = None
    model: str | None = None
    contract: dict[str, Any] = field(default_factory=dict)
    defense: str | None = None
    detectors: list[str] | None = None
    fpr: float = 0.05
    calibration: str | None = None
    on_flag: str = "abstain"
    device: str = "cpu"
    data_dir: str | None = None
    watch: dict[str, Any] | None = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "GuardSpec":
        return cls(**json.loads(text))


def build_guard(spec: GuardSpec) -> Any:
    """The :class:`~medrobust.layer.guard.Guard` ``spec`` describes (its model loaded, its detectors
    calibrated).

    Raises:
        ValueError: neither or both of ``run`` and ``model``, or what ``mr.guard`` refuses.
    """
    import medrobust as mr

    if spec.threads is not None:
        import torch

        torch.set_num_threads(spec.threads)
    if (spec.run is None) == (spec.model is None):
        raise ValueError("give the guard to serve as --run RUN (a finished run folder) or --model MODEL, one of them")
    if spec.run is not None:
        return mr.guard.from_run(spec.run, defense=spec.defense, calibration=spec.calibration, on_flag=spec.on_flag,
                                 device=spec.device)
    given = {k: v for k, v in spec.contract.items() if v is not None}
    contract = mr.ModelContract.given(None, given, where=spec.model) if given else None
    options: dict[str, Any] = {}
    if spec.defense is not None:
        options["defense"] = spec.defense or None
    if spec.detectors is not None:
        options["detectors"] = spec.detectors
    return mr.guard(spec.model, fpr=spec.fpr, calibration=spec.calibration, on_flag=spec.on_flag, contract=contract,
                    device=spec.device, **options)
