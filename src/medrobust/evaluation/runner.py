"""The experiment runner: the whole study, end to end, resumable.

Stages, each persisted in the run directory as it finishes: model (train or load) and
surrogates -> baseline on the test set -> every attack white-box on the model and
transferred from each surrogate, plus epsilon sweeps and the transfer matrix -> every
defense on clean images (its cost), on the attacks' images (non-adaptive) and against an
adaptive attacker (BPDA/EOT) -> detection (reference and squeeze) on clean, benign-changed
and attacked images -> samples (pictures, Grad-CAM) -> ``metrics.json``.

Resuming: the same configuration run again finds its finished stages (checkpoints, batch
files, stage JSON) and computes only what is missing. A different configuration in the same
run directory is refused rather than mixed in.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

import numpy as np
import torch
import torch.nn as nn

from medrobust import __version__
from medrobust.evaluation.config import ExperimentConfig, ModelConfig
from medrobust.evaluation.progress import Progress, SilentProgress
from medrobust.evaluation.results import (
    AttackOutcome,
    DefenseOutcome,
    DetectorOutcome,
    RobustnessScore,
    RunMetrics,
    write_metrics,
)
from medrobust.evaluation.run_dir import atomic_write_text, load_json, save_json
from medrobust.evaluation.samples import array_key, save_samples
from medrobust.evaluation.stage_attacks import (
    AttackRun,
    attack_eps,
    attack_outcome,
    eps_label,
    run_attack_stage,
    sweep_points,
    transfer_matrix_from_images,
)

log = logging.getLogger(__name__)

SCORE_DEFINITION = (
    "Robustness score = 100 x (lowest accuracy under any white-box attack at its main budget) / (clean accuracy), "
    "on the attack subset, without defenses; 100 means no attack lowered accuracy, 0 means some attack "
    "took it to zero."
)


class ConfigMismatchError(ValueError):
    """The run directory holds a run with another configuration."""


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """What a PNG stores: 8-bit grey levels."""
    return torch.round(x * 255.0) / 255.0


def stratified_subset(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of up to ``n`` items taking classes in turn (in their original order)."""
    per_class = [list(np.flatnonzero(y == k)) for k in np.unique(y)]
    out: list[int] = []
    while len(out) < n and any(per_class):
        for items in per_class:
            if items and len(out) < n:
                out.append(items.pop(0))
    return np.array(sorted(out), dtype=np.int64)


class Runner:
    """Run the experiment described by ``config``; ``run()`` returns the metrics."""

    def __init__(self, config: ExperimentConfig, progress: Progress | None = None) -> None:
        from medrobust.models.device import resolve_device

        self.config = config
        self.dir = config.run_dir
        self.stages = self.dir / "stages"
        self.progress = progress or SilentProgress()
        self.device = resolve_device(config.device)
        self.timings: dict[str, float] = {}

    # --- run directory ----------------------------------------------------------------------
    def prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / "config.yaml"
        text = self.config.resolved_yaml()
        if path.is_file() and path.read_text() != text:
            raise ConfigMismatchError(
                f"{path}: this run directory holds a run with a different configuration; "
                "use another name (or output_dir), or delete the folder to start over"
            )
        atomic_write_text(path, text)

    def _stage_json(self, name: str, compute):
        path = self.stages / f"{name}.json"
        if path.is_file():
            return load_json(path)
        value = compute()
        save_json(path, value)
        return value

    # --- data and models --------------------------------------------------------------------
    def load_data(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, list[str]]]:
        from medrobust.data.sources import open_dataset

        d = self.config.data
        dataset = open_dataset(d.source, size=d.size, fractions=d.split, split_seed=d.split_seed,
                               per_class=d.per_class, seed=d.phantom_seed, classes=d.classes)
        self.classes = list(dataset.classes)
        parts = dataset.splits()
        missing = {"train", "val", "test"} - set(parts)
        if missing:
            raise ValueError(f"{d.source}: no {', '.join(sorted(missing))} split in the data")
        out = {}
        with self.progress.stage("data", len(dataset)) as bar:
            for name, part in parts.items():
                x, y, ids = part.load(self.config.batch_size)
                out[name] = (_quantise(x), y, ids)
                bar.advance(len(part))
                self.skipped = getattr(self, "skipped", []) + [str(s) for s in part.skipped]
        return out

    def model(self, folder: str, cfg: ModelConfig, data, name: str) -> nn.Module:
        from medrobust.models.checkpoint import is_checkpoint, load_checkpoint, save_checkpoint
        from medrobust.models.loading import load_classifier
        from medrobust.models.training import TrainConfig, train_classifier
        from medrobust.models.zoo import build_classifier

        target = self.dir / folder
        if cfg.load is not None:
            lc = cfg.load
            return load_classifier(lc.path, arch=lc.arch, classes=lc.classes, input_size=lc.input_size,
                                   intensity=lc.intensity, output_kind=lc.output_kind, trust_pickle=lc.trust_pickle,
                                   device=self.device)
        if is_checkpoint(target):
            log.info("%s: reusing the trained model in %s", name, target)
            return load_checkpoint(target, self.device)
        t = cfg.train
        assert t is not None
        torch.manual_seed(self.config.seed)
        model = build_classifier(t.arch, self.classes, self.config.data.size, weights=t.weights)
        adversary = None
        if t.adversarial:
            from medrobust.attacks.registry import build_attack

            adversary = build_attack(t.adversarial)
        train_cfg = TrainConfig(epochs=t.epochs, batch_size=t.batch_size, lr=t.lr, trainable=t.trainable,
                                two_phase=t.two_phase, seed=self.config.seed, max_minutes=t.max_minutes)
        start = time.perf_counter()
        with self.progress.stage(f"train {name}", t.epochs) as bar:
            result = train_classifier(model, data["train"][:2], data["val"][:2], train_cfg, device=self.device,
                                      pretrained=t.weights not in ("none", ""), adversary=adversary,
                                      on_epoch=lambda _: bar.advance(1))
        self.timings[f"train {name}"] = (time.perf_counter() - start) / max(1, len(data["train"][0]))
        save_checkpoint(model.cpu(), target, extra={
            "training": {**train_cfg.to_json(), "lr": result.lr, "weights": t.weights, "adversarial": t.adversarial},
            "history": result.history,
            "metrics": {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                        "train_seconds": result.seconds, "epochs_run": len(result.history)},
        })
        return model.to(self.device).eval()

    # --- the run ----------------------------------------------------------------------------
    def run(self) -> RunMetrics:
        from medrobust.evaluation.classification import classification_report

        start = time.perf_counter()
        cfg = self.config
        self.prepare()
        data = self.load_data()
        model = self.model("model", cfg.model, data, "model")
        surrogates = {s.name: self.model(f"surrogates/{s.name}", s, data, s.name) for s in cfg.surrogates}

        x_test, y_test, _ = data["test"]
        t0 = time.perf_counter()
        baseline = self._stage_json("baseline", lambda: {"pred": model.predict(x_test).tolist()})
        self.timings["baseline"] = (time.perf_counter() - t0) / max(1, len(x_test))
        base_pred = np.array(baseline["pred"])
        baseline_report = classification_report(y_test.numpy(), base_pred, self.classes)

        idx = stratified_subset(y_test.numpy(), cfg.attack_images)
        x, y = x_test[idx], y_test[idx]
        ids = [data["test"][2][i] for i in idx]
        y_np = y.numpy()
        clean_pred = base_pred[idx]

        white, transferred, outcomes, sweeps = self._attacks(model, surrogates, x, y, ids, clean_pred)
        transfer = None
        if surrogates and white:
            first = white[0]
            adversarial = {"model": first.x_adv}
            for run in transferred:
                if run.name == first.name and run.eps == first.eps:
                    adversarial[run.source] = run.x_adv
            transfer = transfer_matrix_from_images(first.key, adversarial, {"model": model, **surrogates}, x, y_np)
        defenses, defended_images = self._defenses(model, x, y, clean_pred, white)
        detectors = self._detection(model, data, x, ids, white)
        self._samples(model, x, y_np, ids, white, defended_images)

        worst = min((o.adversarial.accuracy for o in outcomes if o.source == "white-box"), default=None)
        clean_acc = float((clean_pred == y_np).mean())
        score = 100.0 * min(1.0, worst / clean_acc) if worst is not None and clean_acc > 0 else 100.0
        metrics = RunMetrics(
            name=cfg.name, medrobust_version=__version__,
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            config=cfg.model_dump(mode="json"),
            data={"source": cfg.data.source, "size": cfg.data.size, "classes": self.classes,
                  "n": {k: int(len(v[1])) for k, v in data.items()}, "attack_images": int(len(x)),
                  "skipped": getattr(self, "skipped", [])},
            model=self._model_summary(model),
            baseline=baseline_report, attacks=outcomes, eps_sweep=sweeps, transfer=transfer,
            defenses=defenses, detectors=detectors,
            robustness_score=RobustnessScore(value=round(score, 1), definition=SCORE_DEFINITION),
            seconds_per_image=self.timings, seconds_total=time.perf_counter() - start,
        )
        write_metrics(metrics, self.dir)
        return metrics

    def _model_summary(self, model: nn.Module) -> dict:
        from medrobust.models.classifier import count_parameters

        meta_path = self.dir / "model" / "model.json"
        meta = load_json(meta_path) if meta_path.is_file() else {}
        return {"arch": getattr(model, "arch", None), "parameters": count_parameters(model),
                "contract": model.contract.to_json() if hasattr(model, "contract") else {},
                "training": meta.get("training"), "metrics": meta.get("metrics"),
                "surrogates": [s.name for s in self.config.surrogates]}

    def _attacks(self, model, surrogates, x, y, ids, clean_pred):
        cfg = self.config
        root = self.stages / "attacks"
        white: list[AttackRun] = []
        transferred: list[AttackRun] = []
        outcomes: list[AttackOutcome] = []
        sweeps: dict[str, list] = {}
        y_np = y.numpy()
        for acfg in cfg.attacks:
            params = {**acfg.params, "seed": acfg.params.get("seed", cfg.seed)}
            eps = attack_eps(acfg.name, params)
            key = f"{acfg.name}@{eps_label(eps)}" if eps else acfg.name
            t0 = time.perf_counter()
            with self.progress.stage(f"{key} white-box", len(x)) as bar:
                run = run_attack_stage(root, key, acfg.name, params, model, model, x, y, cfg.batch_size, cfg.seed,
                                       self.device, bar.advance)
            self.timings[f"attack {key}"] = (time.perf_counter() - t0) / len(x)
            white.append(run)
            outcomes.append(attack_outcome(run, x, y_np, clean_pred, self.classes))
            if acfg.transfer:
                for name, sur in surrogates.items():
                    tkey = f"{key} from {name}"
                    with self.progress.stage(tkey, len(x)) as bar:
                        trun = run_attack_stage(root, tkey, acfg.name, params, sur, model, x, y, cfg.batch_size,
                                                cfg.seed, self.device, bar.advance)
                    transferred.append(trun)
                    outcomes.append(attack_outcome(trun, x, y_np, clean_pred, self.classes))
            if acfg.eps_sweep:
                runs = []
                for e in acfg.eps_sweep:
                    skey = f"{acfg.name}@{eps_label(e)}"
                    if abs(e - eps) < 1e-9:
                        runs.append(run)
                        continue
                    with self.progress.stage(f"{skey} sweep", len(x)) as bar:
                        runs.append(run_attack_stage(root, skey, acfg.name, {**params, "eps": e}, model, model, x, y,
                                                     cfg.batch_size, cfg.seed, self.device, bar.advance))
                sweeps[acfg.name] = sweep_points(runs, y_np)
        return white, transferred, outcomes, sweeps

    def _defenses(self, model, x, y, clean_pred, white):
        from medrobust.evaluation.stage_defenses import defense_outcome

        cfg = self.config
        if not cfg.defenses or not cfg.adaptive.enabled:
            return [], {}
        root = self.stages / "defenses"
        eps = white[0].eps if white else 8 / 255
        params = {**cfg.adaptive.params, "seed": cfg.seed}
        adaptive_key = f"{cfg.adaptive.attack}@{eps_label(eps)}"
        plain = next((r for r in white if r.key == adaptive_key), None)
        if plain is None:
            with self.progress.stage(f"{adaptive_key} (undefended reference)", len(x)) as bar:
                plain = run_attack_stage(self.stages / "attacks", adaptive_key, cfg.adaptive.attack,
                                         {**params, "eps": eps}, model, model, x, y, cfg.batch_size, cfg.seed,
                                         self.device, bar.advance)
        outcomes: list[DefenseOutcome] = []
        images: dict[str, dict[str, np.ndarray]] = {}
        for spec in cfg.defenses:
            t0 = time.perf_counter()
            with self.progress.stage(f"defense {spec}", len(x)) as bar:
                outcome, imgs = defense_outcome(spec, model, x, y.numpy(), clean_pred, white, cfg.adaptive.attack,
                                                params, eps, cfg.adaptive.eot_samples, plain, root, cfg.batch_size,
                                                cfg.seed, self.device, self.classes, bar.advance)
            self.timings[f"defense {spec} (incl. adaptive attack)"] = (time.perf_counter() - t0) / len(x)
            outcomes.append(outcome)
            images[spec] = imgs
        return outcomes, images

    def _detection(self, model, data, x, ids, white) -> list[DetectorOutcome]:
        from medrobust.detection.benign import benign_changes
        from medrobust.evaluation.stage_detection import detector_outcome

        cfg = self.config.detectors
        if not white or not (cfg.reference.enabled or cfg.squeeze.enabled):
            return []
        benign = benign_changes(x, torch.Generator().manual_seed(self.config.seed))
        out = []
        if cfg.reference.enabled:
            def compute_reference():
                from medrobust.detection.reference import ReferenceDetector

                det = ReferenceDetector(cfg.reference.ssim_threshold, cfg.reference.confidence_drop,
                                        cfg.reference.mean_abs_threshold)
                return detector_outcome("reference", det, model, x, benign, white, ids, True).model_dump()

            with self.progress.stage("detector reference", 1) as bar:
                out.append(DetectorOutcome.model_validate(self._stage_json("detection-reference", compute_reference)))
                bar.advance(1)
        if cfg.squeeze.enabled:
            def compute_squeeze():
                from medrobust.detection.squeeze import SqueezeDetector

                det = SqueezeDetector(cfg.squeeze.squeezers, target_fpr=cfg.squeeze.target_fpr)
                det.fit(model, data["val"][0][: cfg.squeeze.calibration_images])
                return detector_outcome("squeeze", det, model, x, benign, white, ids, False).model_dump()

            with self.progress.stage("detector squeeze", 1) as bar:
                out.append(DetectorOutcome.model_validate(self._stage_json("detection-squeeze", compute_squeeze)))
                bar.advance(1)
        return out

    def _samples(self, model, x, y, ids, white, defended) -> None:
        from medrobust.evaluation.gradcam import gradcam

        path = self.dir / "samples" / "examples.npz"
        if path.is_file():
            return
        k = min(self.config.sample_images, len(x))
        pick = stratified_subset(y, k)
        arrays: dict[str, np.ndarray] = {
            "ids": np.array([ids[i] for i in pick]), "labels": y[pick], "classes": np.array(self.classes),
            "original": x[pick, 0].numpy(), "pred__original": model.predict(x[pick]).numpy(),
        }
        cam = gradcam(model, x[pick].to(self.device))
        if cam is not None:
            arrays["cam__original"] = cam
        for run in white:
            a = array_key(run.key)
            arrays[f"adv__{a}"] = run.x_adv[pick, 0].numpy()
            arrays[f"pred__adv__{a}"] = run.pred[pick]
            cam = gradcam(model, run.x_adv[pick].to(self.device))
            if cam is not None:
                arrays[f"cam__adv__{a}"] = cam
        for spec, imgs in defended.items():
            for which, images in imgs.items():
                key = f"def__{array_key(spec)}__{array_key(which)}"
                arrays[key] = images[pick]
                arrays[f"pred__{key}"] = model.predict(torch.from_numpy(images[pick]).unsqueeze(1)).numpy()
        save_samples(self.dir, arrays)


