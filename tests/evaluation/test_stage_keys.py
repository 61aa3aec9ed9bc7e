"""Stage keys: folder names come from typed fields, never from a label, and are the names medrobust
has always written, so a run folder from before stage keys resumes as it is; a folder this version
cannot read is refused, naming --restart."""

from __future__ import annotations

import shutil

import pytest
import yaml
from typer.testing import CliRunner

from medrobust.cli import app
from medrobust.evaluation.stage_keys import (
    attack_key,
    defense_folder,
    folder_name,
    gradient_adaptive_key,
    square_adaptive_key,
)

# (key, the folder and label medrobust 0.1 wrote before stage keys existed: its label with every run of
# characters other than letters, digits, '.', '-' and '_' replaced by one '_')
HISTORIC = [
    (attack_key("pgd", 8 / 255), "pgd_8_255", "pgd@8/255"),
    (attack_key("sia", 4 / 255, crafted_on="small-cnn"), "sia_4_255_from_small-cnn", "sia@4/255 from small-cnn"),
    (attack_key("pgd", 0.5 / 255), "pgd_1_510", "pgd@1/510"),
    (attack_key("cw", None), "cw", "cw"),
    (gradient_adaptive_key("pgd", 8 / 255, "unrolled", 20, None, 0, "jpeg:quality=75+tv"),
     "pgd_8_255_adaptive_unrolled_20_steps_vs_jpeg_quality_75_tv",
     "pgd@8/255 adaptive unrolled 20 steps vs jpeg:quality=75+tv"),
    (gradient_adaptive_key("pgd", 2 / 255, "bpda", 4, 8, 1, "tvm"), "pgd_2_255_adaptive_bpda_4_steps_eot_8_restart_1_vs_tvm",
     "pgd@2/255 adaptive bpda 4 steps eot 8 restart 1 vs tvm"),
    (gradient_adaptive_key("fgsm", 8 / 255, "smooth", None, None, 0, "jpeg"), "fgsm_8_255_adaptive_smooth_vs_jpeg",
     "fgsm@8/255 adaptive smooth vs jpeg"),
    (square_adaptive_key(8 / 255, 300, "jpeg+tv"), "square_8_255_300_queries_adaptive_vs_jpeg_tv",
     "square@8/255 300 queries adaptive vs jpeg+tv"),
]


@pytest.mark.parametrize(("key", "folder", "label"), HISTORIC, ids=[h[1] for h in HISTORIC])
def test_folders_and_labels_are_the_historic_ones(key, folder, label) -> None:
    assert (key.folder, key.label) == (folder, label)


def test_a_folder_does_not_follow_the_label() -> None:
    """The label is for people; the folder comes from the fields (rewording one moves no file)."""
    key = attack_key("pgd", 8 / 255, crafted_on="twin")
    assert key.folder == folder_name("pgd", "8/255", "from", "twin")
    assert defense_folder("jpeg:quality=75+tv") == "jpeg_quality_75_tv"
    assert gradient_adaptive_key("pgd", 8 / 255, "unrolled", 10, None, 0, "tv").short == "pgd@8/255 adaptive unrolled 10 steps"


def test_an_old_run_folder_resumes_and_one_this_version_cannot_read_is_refused(golden_full_run, tmp_path) -> None:
    """The golden run's folder (stage folders named as every version has named them) resumes with
    nothing recomputed; the same folder whose config.yaml this version cannot read is refused with
    the fix (--restart) and is left as it was."""
    import medrobust as mr

    copy = tmp_path / "old" / "run"
    shutil.copytree(golden_full_run, copy)
    stage_files = {p: p.stat().st_mtime_ns for p in (copy / "stages").rglob("*.npz")}
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["output_dir"] = str(copy.parent)
    mr.evaluate(preset=config)
    assert all(p.stat().st_mtime_ns == t for p, t in stage_files.items())  # read back, never recomputed
    written = yaml.safe_load((copy / "config.yaml").read_text())
    written["a_setting_of_a_future_version"] = 1  # what this version cannot read
    (copy / "config.yaml").write_text(yaml.safe_dump(written))
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["evaluate", str(path)])
    assert result.exit_code == 2
    assert "config.yaml (unreadable by this version) differ" in result.output and "--restart" in result.output
    assert all(p.stat().st_mtime_ns == t for p, t in stage_files.items())
