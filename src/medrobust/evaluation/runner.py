"""The experiment, end to end and resumable: :func:`run_experiment`, a readable sequence of stages.

1. Before anything is computed or written: every component spec is built once, the model loaded,
   the images' size resolved, the data listed, its classes matched to the model's by name
   (:mod:`~medrobust.evaluation.class_plan`), and the run folder claimed
   (:mod:`~medrobust.evaluation.run_folder`: the same configuration on the same images resumes,
   anything else is refused with the reason).
2. The models: the user's, or trained in the run on its train and validation splits
   (:mod:`~medrobust.evaluation.run_models`), then the engine that runs the units of work, here
   or on Ray actors (:mod:`medrobust.execution`).
3. The stages (:mod:`medrobust.evaluation.stages`), each over the frozen
   :class:`~medrobust.evaluation.context.RunContext`: baseline and attack subset -> attacks ->
   transfer matrix -> defenses with their adaptive portfolios -> detectors -> the guard (a defense
   and detectors attacked by one who knows both) -> samples -> per-image table -> (when asked for)
   the RobustBench figure and the certificates; then ``metrics.json`` and ``scorecard.json``
   (:mod:`~medrobust.evaluation.run_metrics`).

Streaming: the test split is never read whole; every stage reads its inputs batch by batch from
earlier stages' files and keeps per-image summaries only, so memory stays flat in the number of
test images. The driver alone writes the run folder, so a run resumes whichever engine finished
which batches.
"""

from __future__ import annotations

import time
from typing import Any

import torch.nn as nn

from medrobust.evaluation.budget_units import check_budget_units, masking_budget_for_data
from medrobust.evaluation.class_plan import plan_classes
from medrobust.evaluation.config import ExperimentConfig
from medrobust.evaluation.context import RunContext, RunSetup
from medrobust.evaluation.results import RunMetrics
from medrobust.evaluation.run_data import SkippedFiles, check_splits, open_run_data
from medrobust.evaluation.run_folder import claim_run_folder
from medrobust.evaluation.run_log import run_log
from medrobust.evaluation.run_metrics import Outcomes, write_run_metrics
from medrobust.evaluation.run_models import ModelMaker, load_user_model, make_engine, read_training_data, resolve_size
from medrobust.evaluation.squeezers_for_data import squeezers_for_data
from medrobust.evaluation.stages import attacks as attack_stage
from medrobust.evaluation.stages import baseline as baseline_stage
from medrobust.evaluation.stages import certify as certify_stage
from medrobust.evaluation.stages import defenses as defense_stage
from medrobust.evaluation.stages import detection as detection_stage
from medrobust.evaluation.stages import guard as guard_stage
from medrobust.evaluation.stages import model_checks as checks_stage
from medrobust.evaluation.stages import per_image as per_image_stage
from medrobust.evaluation.stages import robustbench as robustbench_stage
from medrobust.evaluation.stages import samples as samples_stage
from medrobust.evaluation.stages import transfer as transfer_stage
from medrobust.execution.progress import Progress, SilentProgress
from medrobust.logs.per_image_log import per_image_log
from medrobust.models.intensity import parse_intensity


def run_experiment(config: ExperimentConfig, progress: Progress | None = None, restart: bool = False,
                   model: nn.Module | None = None, dataset=None) -> RunMetrics:
    """Run the experiment ``config`` describes into its run folder; returns the metrics.

    Args:
        config: the experiment, validated.
        progress: where stages report their progress (nothing is printed). Default None: silent.
        restart: empty the run folder first instead of resuming it. Default False.
        model: a model already in memory, used instead of ``config.model.load`` (which then
            only names it). Default None.
        dataset: likewise an ImageDataset instead of ``data.source``. Default None.

    Returns:
        The run's :class:`~medrobust.evaluation.results.RunMetrics` (also in ``metrics.json``).

    Raises:
        ValueError: a component spec or name refused, classes that do not match, a run folder
            holding another run's results
            (:class:`~medrobust.evaluation.run_folder.RunFolderConflict`), or no readable test
            image.
    """
    from medrobust.data.fingerprint import dataset_fingerprint
    from medrobust.models.device import resolve_device

    start = time.perf_counter()
    progress = progress or SilentProgress()
    config.check_components()
    device = resolve_device(config.device)
    loaded = model.to(device).eval() if model is not None else (
        load_user_model(config.model, "model", device) if config.model.load is not None else None)
    config, size_note = resolve_size(config, loaded)
    skipped = SkippedFiles()
    data = open_run_data(config, skipped, dataset)
    check_budget_units(config, data.grid, config.data.source)
    config = squeezers_for_data(config, data.grid)
    config = masking_budget_for_data(config, data.grid, _model_intensity(config, loaded))
    plan = plan_classes(config.data, list(data.classes), list(loaded.classes) if loaded is not None else None)
    surrogates = {s.name: load_user_model(s, f"surrogate {s.name}", device) for s in config.surrogates
                  if s.load is not None}
    for name, surrogate in surrogates.items():
        plan.check_surrogate(name, surrogate)
    folder = claim_run_folder(config, dataset_fingerprint(data), restart)
    with run_log(folder.root):
        for line in skipped.lines:  # found while listing, before the log was open
            per_image_log.warning("skipping %s", line)
        parts = check_splits(config, data)
        maker = ModelMaker(config, folder.root, plan, device, progress, skipped)
        training = read_training_data(config, folder.root, parts, plan, progress, skipped)
        models = {"model": loaded if loaded is not None else maker.model("model", config.model, training, "model")}
        for s in config.surrogates:
            models[s.name] = surrogates.get(s.name) or maker.model(f"surrogates/{s.name}", s, training, s.name)
        del training  # training is done: only the test split is used from here on, batch by batch
        engine = make_engine(config, folder.root, models, device, given_model=model is not None)
        try:
            setup = RunSetup(config=config, root=folder.root, engine=engine, device=device, plan=plan, models=models,
                             progress=progress, skipped=skipped, parts=parts)
            notes = [*([size_note] if size_note else []), *folder.notes]
            return _stages(setup, notes, maker.timings, start)
        finally:
            engine.close()


def _model_intensity(config: ExperimentConfig, loaded: Any) -> Any:
    """The model's intensity convention before it is trained: a loaded model's, else the one its
    training section names (None when it names none: the architecture's default, not known yet)."""
    if loaded is not None:
        return getattr(getattr(loaded, "contract", None), "intensity", None)
    train = config.model.train
    return parse_intensity(train.intensity) if train is not None and train.intensity else None


def _stages(setup: RunSetup, notes: list[str], timings: dict[str, float], start: float) -> RunMetrics:
    """The stages in their order (adding one: a module in :mod:`medrobust.evaluation.stages`, one line here)."""
    baseline = baseline_stage.run(setup)
    inputs, clean_pred = baseline_stage.attack_subset(setup, baseline)
    ctx = RunContext(**{f: getattr(setup, f) for f in RunSetup.__dataclass_fields__}, inputs=inputs,
                     clean_pred=clean_pred)
    checks = checks_stage.run(ctx)
    attacks = attack_stage.run(ctx, checks)
    checks = checks_stage.after_attacks(checks, ctx, attacks)
    transfer = transfer_stage.run(ctx, attacks)
    defenses = defense_stage.run(ctx, attacks)
    detectors = detection_stage.run(ctx, attacks)
    guard = guard_stage.run(ctx, attacks, defenses)
    samples_stage.run(ctx, attacks)
    per_image_stage.run(ctx, attacks, detectors)
    robustbench = robustbench_stage.run(ctx, checks) if ctx.config.robustbench else None
    certified = certify_stage.run(ctx) if ctx.config.certify is not None else None
    outcomes = Outcomes(baseline=baseline, attacks=attacks, transfer=transfer, defenses=defenses.outcomes,
                        detectors=detectors, notes=notes, model_checks=checks, robustbench=robustbench, guard=guard,
                        certified=certified,
                        seconds_per_image={**timings, "baseline": baseline.seconds_per_image,
                                           **attacks.seconds_per_image, **defenses.seconds_per_image,
                                           **({"guard": guard.seconds_per_image} if guard is not None else {}),
                                           **({"certify": certified.seconds_per_image} if certified else {})})
    return write_run_metrics(ctx, outcomes, time.perf_counter() - start)
