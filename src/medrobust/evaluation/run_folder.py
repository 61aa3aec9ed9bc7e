"""Claiming a run folder: whose results it holds, and whether this run may resume them.

A run folder holds one configuration's results (``config.yaml``) computed on one set of images
(``data.json``: their fingerprint, :func:`~medrobust.data.fingerprint.dataset_fingerprint`).
The same configuration on the same images resumes: its finished stages are kept and only what
is missing is computed. A configuration that differs only in settings that change no computed
result (:data:`~medrobust.evaluation.config.REPORT_ONLY_FIELDS`: report settings, the engine,
the folder's own place) resumes too, its results re-read with the new settings. Anything else is
refused, naming what differs, unless no stage has finished yet (the new configuration then takes
the folder over, and says so) or the run starts afresh (``restart``), which empties the folder.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from medrobust.evaluation.config import ExperimentConfig
from medrobust.evaluation.run_dir import atomic_write_text, load_json, save_json

log = logging.getLogger(__name__)

DATA_FILE = "data.json"
"""The run folder's record of the images its stages were computed on (their fingerprint)."""
CONFIG_FILE = "config.yaml"


class RunFolderConflict(ValueError):
    """The run folder holds finished results that this run cannot resume: another configuration,
    other images, or a folder that is not a run. ``str()`` gives the fix in Python's terms
    (``restart=True``, ``name=``); :attr:`cli_message` in the command line's (``--restart``,
    ``--name``), which the CLI prints instead."""

    def __init__(self, problem: str, fix: str = "restart") -> None:
        self.problem = problem
        if fix == "restart":
            python = "start afresh with restart=True (deleting them), or choose another name= or run_dir="
            cli = "start afresh with --restart (deleting them), or choose another --name or --output-dir"
        else:
            python, cli = "choose another name= or run_dir=", "choose another --name or --output-dir"
        super().__init__(f"{problem}: {python}")
        self.cli_message = f"{problem}: {cli}"


def differing_fields(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted paths of the fields whose values differ between two configuration dicts."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        where = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differing_fields(a, b, where + ".")
        elif a != b:
            out.append(where)
    return out


@dataclass(frozen=True)
class RunFolder:
    """The paths of a run folder (``runs/NAME``)."""

    root: Path
    notes: list[str] = field(default_factory=list)  # what claiming it found (a takeover, changed report settings)

    @property
    def stages(self) -> Path:
        return self.root / "stages"

    def has_finished_stage(self) -> bool:
        """Whether the folder holds any result worth keeping (a stage file, a trained model, metrics)."""
        finished = [self.root / "metrics.json", self.root / "model" / "model.json"]
        if any(p.is_file() for p in finished):
            return True
        return any(p.is_file() for folder in (self.stages, self.root / "surrogates")
                   if folder.is_dir() for p in folder.rglob("*"))


def claim_run_folder(config: ExperimentConfig, data_fingerprint: str, restart: bool = False) -> RunFolder:
    """Claim ``config.run_dir`` for this run: write ``config.yaml`` and ``data.json``, or check the
    ones there (see the module docstring).

    Args:
        config: the run's configuration (its resolved YAML is what is compared and written).
        data_fingerprint: the images this run reads
            (:func:`~medrobust.data.fingerprint.dataset_fingerprint`).
        restart: empty the folder first (refused for a non-empty folder without
            ``config.yaml``: it may not be a run). Default False.

    Returns:
        The :class:`RunFolder`, its ``notes`` saying what claiming it found (a takeover, changed
        report settings).

    Raises:
        RunFolderConflict: the folder's finished results cannot be resumed by this run (another
            configuration, other images, or a folder that is not a run).
    """
    folder = RunFolder(config.run_dir)
    path = folder.root / CONFIG_FILE
    if restart and folder.root.exists():
        if folder.root.is_dir() and not path.is_file() and any(folder.root.iterdir()):
            raise RunFolderConflict(f"{folder.root}: starting afresh empties a run folder, and this one holds no "
                                    "config.yaml; it may not be a medrobust run", fix="another")
        if folder.root.is_dir():
            log.warning("%s: starting the run afresh (restart): its previous results are deleted", folder.root)
            shutil.rmtree(folder.root)
    folder.root.mkdir(parents=True, exist_ok=True)
    text = config.resolved_yaml()
    taken_over = False
    if path.is_file() and path.read_text() != text:
        taken_over = _check_config(folder, path, config)
    _check_data(folder, config, data_fingerprint, taken_over)
    atomic_write_text(path, text)
    return folder


def _check_config(folder: RunFolder, path: Path, config: ExperimentConfig) -> bool:
    """Compare the folder's config.yaml with ``config``; True when the folder is taken over."""
    try:
        old = ExperimentConfig.model_validate(yaml.safe_load(path.read_text()))
        differing = differing_fields(old.without_report_only(), config.without_report_only())
    except Exception:  # noqa: BLE001 — an old or hand-edited config.yaml is just "different"
        old, differing = None, ["config.yaml (unreadable by this version)"]
    if not differing:
        assert old is not None
        if old.execution != config.execution:
            log.info("%s: resuming on another engine (%s); finished batches are kept", path, config.execution.engine)
        if (old.data.normal_class, old.data.emergency_findings) != (config.data.normal_class,
                                                                     config.data.emergency_findings):
            folder.notes.append("report settings changed since the last run (normal class, emergency findings); "
                                "the results were re-read with the new ones")
            log.info("%s: only report settings changed; re-reading the finished stages with them", path)
        return False
    if not folder.has_finished_stage():
        folder.notes.append("the run folder held an unfinished run with another configuration; "
                            "this configuration took it over")
        log.warning("%s: no stage of the earlier configuration had finished; this configuration takes "
                    "the folder over", folder.root)
        for leftover in (folder.stages, folder.root / "samples"):
            shutil.rmtree(leftover, ignore_errors=True)
        return True
    shown = ", ".join(differing[:3]) + (f" and {len(differing) - 3} more" if len(differing) > 3 else "")
    raise RunFolderConflict(f"{folder.root}: this run folder holds finished results of another configuration "
                            f"({shown} differ)")


def _check_data(folder: RunFolder, config: ExperimentConfig, fingerprint: str, taken_over: bool) -> None:
    """Resume only on the images the finished stages were computed on (``data.json``)."""
    path = folder.root / DATA_FILE
    if path.is_file() and not taken_over and folder.has_finished_stage():
        try:
            recorded = load_json(path).get("fingerprint")
        except (ValueError, AttributeError):
            recorded = None
        if recorded != fingerprint:
            raise RunFolderConflict(f"{folder.root}: the images changed since this run folder was written "
                                    f"({config.data.source}: files added, removed, replaced or edited)")
    elif not path.is_file() and folder.has_finished_stage():
        log.info("%s: no data.json (written by an older medrobust); the images cannot be checked against the "
                 "finished stages", folder.root)
    save_json(path, {"source": config.data.source, "fingerprint": fingerprint})
