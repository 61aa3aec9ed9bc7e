"""Opening data sources by name (as the CLI and config files do), and `medrobust data info`."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.data.errors import DataSourceError
from medrobust.data.io import write_png
from medrobust.data.phantom import PhantomDataset
from medrobust.data.sources import open_dataset


def _tree(root, per_class=5):
    rng = np.random.default_rng(0)
    for name in ("Normal", "Pneumonia"):
        for i in range(per_class):
            write_png(root / name / f"{i}.png", rng.random((20, 24)))


def test_phantom_spec_with_options() -> None:
    ds = open_dataset("phantom:per_class=4,seed=3", size=40)
    assert isinstance(ds, PhantomDataset)
    assert len(ds) == 12 and ds.size == 40 and ds.seed == 3


def test_folder_spec_resizes_and_splits(tmp_path) -> None:
    _tree(tmp_path)
    ds = open_dataset(str(tmp_path), size=16)
    assert ds.classes == ["Normal", "Pneumonia"]
    assert {r.split for r in ds.records} == {"train", "val", "test"}
    assert ds[0][0].shape == (1, 16, 16)


@pytest.mark.parametrize("spec", ["nope-not-here", "nih:only-one-part", "phantom:per_class"])
def test_bad_specs_say_what_to_write(spec: str) -> None:
    with pytest.raises(DataSourceError):
        open_dataset(spec)


def test_data_info_prints_counts_and_lists_unreadable_files(tmp_path) -> None:
    _tree(tmp_path)
    (tmp_path / "Normal" / "broken.png").write_bytes(b"not a png at all")
    runner = CliRunner()
    result = runner.invoke(app, ["data", "info", str(tmp_path), "--check"])
    assert result.exit_code == 3, result.output  # partial: some files unreadable
    assert "Normal" in result.stdout and "total" in result.stdout
    assert "broken.png" in result.stderr and "1 file(s) skipped" in result.stderr  # stdout holds the results


def test_data_info_error_is_one_clear_line(tmp_path) -> None:
    result = CliRunner().invoke(app, ["data", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "Traceback" not in result.output
