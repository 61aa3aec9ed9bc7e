"""A complete synthetic run directory built from the result types (no model is trained): three
classes, white-box and transferred attacks, an epsilon sweep, a transfer matrix, a defense, two
detectors, example images with Grad-CAM heatmaps and a training history."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from medrobust.evaluation.results import (
    AttackOutcome,
    CertifiedFigure,
    ClassificationReport,
    ClassMetrics,
    DangerousFlip,
    DefenseOutcome,
    DetectorOutcome,
    Perturbation,
    RobustnessScore,
    RunMetrics,
    SweepPoint,
    TransferMatrix,
    write_metrics,
)
from medrobust.evaluation.samples import save_samples
from medrobust.evaluation.stage_keys import folder_name as array_key

CLASSES = ["Normal", "Pneumonia", "Pneumothorax"]
EPS = 8 / 255
SIA = "sia@8/255"
PGD = "pgd@8/255"
MIFGSM = "mifgsm@8/255"
SIA_TRANSFER = "sia@8/255 from resnet18"
DEFENSE = "jpeg+tv"
K = 4
MODEL_FILE = "models/chest-cnn-v3.safetensors"
MODEL_SHA256 = "9f2c4e1a7b3d5f60" * 4


def report_from_confusion(cm: list[list[int]]) -> ClassificationReport:
    """A ClassificationReport whose numbers follow from the confusion matrix."""
    m = np.asarray(cm, dtype=float)
    total = m.sum()
    per_class = {}
    for i, name in enumerate(CLASSES):
        tp = m[i, i]
        fn = m[i].sum() - tp
        fp = m[:, i].sum() - tp
        tn = total - tp - fn - fp
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = ClassMetrics(precision=precision, recall=recall, specificity=tn / (tn + fp), f1=f1,
                                       support=int(m[i].sum()))
    return ClassificationReport(n=int(total), accuracy=float(np.trace(m) / total), classes=CLASSES,
                                confusion_matrix=cm, per_class=per_class)


CLEAN_CM = [[16, 3, 1], [3, 15, 2], [2, 2, 16]]


def _attack(key: str, attack: str, source: str, adv_cm: list[list[int]], flips: list[tuple[str, int]]) -> AttackOutcome:
    clean, adversarial = report_from_confusion(CLEAN_CM), report_from_confusion(adv_cm)
    return AttackOutcome(
        key=key, attack=attack, eps=EPS, params={"steps": 10, "alpha": EPS / 10}, source=source, clean=clean,
        adversarial=adversarial,
        success_rate_all=1 - adversarial.accuracy, success_rate_correct=0.75,
        accuracy_drop_pp={c: 100 * (clean.per_class[c].recall - adversarial.per_class[c].recall) for c in CLASSES},
        dangerous_flips=[DangerousFlip(true_class=c, predicted_class="Normal", count=n, rate=n / 16,
                                     emergency=c == "Pneumothorax") for c, n in flips],
        perturbation=Perturbation(linf_mean=EPS, linf_max=EPS, l2_mean=0.61, ssim_mean=0.93, psnr_mean_db=36.2),
        seconds_per_image=0.12,
    )


def _detector(name: str, rates: dict[str, float], fpr: float, lines: list[str]) -> DetectorOutcome:
    grid = np.linspace(0, 1, 11).tolist()
    return DetectorOutcome(
        name=name, threshold={"score": 1.0}, detection_rate=rates, fpr_clean=fpr,
        fpr_benign={"jpeg90": fpr + 0.05, "rewindow": fpr + 0.1, "resize": fpr + 0.02, "noise": fpr},
        roc_auc={k: 0.5 + v / 2 for k, v in rates.items()},
        roc={k: {"fpr": grid, "tpr": [min(1.0, x ** (1 - v)) for x in grid]} for k, v in rates.items()},
        reasons={k: {"ssim": 10, "label_change": 7} for k in rates}, latency_ms_per_image=3.5, log_lines=lines,
    )


def make_certified() -> CertifiedFigure:
    """Randomized smoothing's certificates of the synthetic run: certified accuracy falling with
    the radius (points and curve from the same rule)."""
    from medrobust.evaluation.certified_accuracy import CERTIFIED_DEFINITION
    from medrobust.evaluation.results import CertifiedPoint

    def point(r: float) -> CertifiedPoint:
        return CertifiedPoint(radius=r, grey_levels_per_pixel=round(r / 32 * 255, 6), accuracy=max(0.0, 0.7 - 0.6 * r),
                              interval=[max(0.0, 0.6 - 0.6 * r), min(1.0, 0.8 - 0.6 * r)])

    return CertifiedFigure(n=60, sigma=0.25, n0=100, draws=1000, alpha=0.001, pixels=32 * 32,
                           points=[point(r) for r in (0.1, 0.25, 0.5, 1.0)], curve=[point(r / 10) for r in range(11)],
                           abstention_rate=0.15, smoothed_clean_accuracy=0.7, smoothed_abstention_rate=0.1,
                           base_clean_accuracy=0.78, seconds_per_image=0.5, definition=CERTIFIED_DEFINITION,
                           noise_sigma_trained=0.25)


def make_metrics(*, transfer: bool = True, defenses: bool = True, detectors: bool = True) -> RunMetrics:
    attacks = [
        _attack(SIA, "sia", "white-box", [[14, 4, 2], [9, 7, 4], [4, 5, 11]], [("Pneumonia", 2), ("Pneumothorax", 3)]),
        _attack(PGD, "pgd", "white-box", [[4, 9, 7], [10, 5, 5], [9, 6, 5]], [("Pneumonia", 6), ("Pneumothorax", 7)]),
        _attack(MIFGSM, "mifgsm", "white-box", [[8, 7, 5], [9, 8, 3], [6, 4, 10]], [("Pneumothorax", 0)]),
    ]
    if transfer:
        attacks.append(_attack(SIA_TRANSFER, "sia", "resnet18", [[15, 3, 2], [5, 12, 3], [3, 3, 14]],
                               [("Pneumothorax", 1)]))
    keys = [a.key for a in attacks]
    defense = DefenseOutcome(
        name=DEFENSE, clean=report_from_confusion([[15, 4, 1], [3, 14, 3], [2, 3, 15]]), clean_cost_pp=3.3333,
        non_adaptive={k: 0.6 + 0.02 * i for i, k in enumerate(keys)},
        non_adaptive_recovery_pp={k: 100 * (0.6 + 0.02 * i) - 100 * a.adversarial.accuracy
                                  for i, (k, a) in enumerate(zip(keys, attacks))},
        adaptive_attack="pgd@8/255 BPDA", adaptive_accuracy=0.35, adaptive_recovery_pp=35 - 100 * attacks[1].adversarial.accuracy,
        gradient_mode="bpda", seconds_per_image=0.02,
    )
    reference_lines = [
        "img000: Attack Detected | SSIM: 0.81 | Orig: Normal -> Adv: Pneumothorax | Confidence Drop: 64.00%",
        "img001: No Attack | SSIM: 0.97 | Orig: Pneumonia -> Adv: Pneumonia | Confidence Drop: 1.20%",
        "img002: Attack Detected | SSIM: 0.88 | Orig: Pneumothorax -> Adv: Normal | Confidence Drop: 22.10%",
        "unknown9: Attack Detected | SSIM: 0.80 | Orig: Normal -> Adv: Pneumonia | Confidence Drop: 30.00%",
    ]
    squeeze_lines = ["img000: Attack Detected | Score: 1.2000 > 0.4000 | Squeezers: bits:bits=5, median:size=2"]
    return RunMetrics(
        name="synthetic", medrobust_version="0.1.0", created="2025-01-01T00:00:00+00:00",
        config={"data": {"source": "phantom", "size": 32, "split_seed": 42}, "model": {"arch": "small-cnn"}, "seed": 7,
                "attacks": [{"name": "sia", "eps": "8/255"}, {"name": "pgd", "eps": "8/255"}]},
        data={"source": "phantom", "images": 300, "test": 60, "classes": CLASSES, "size": 32, "split": [0.6, 0.2, 0.2],
              "n": {"train": 180, "val": 60, "test": 60}, "tested": 60, "attack_images": 60, "normal_class": "Normal",
              "skipped": ["scans/broken.png: not an image (cannot identify image file)"]},
        model={"arch": "small-cnn", "parameters": 12345, "input_size": 32, "file": MODEL_FILE, "sha256": MODEL_SHA256,
               "differentiable": True,
               "contract": {"classes": CLASSES, "input_size": [32, 32], "stored_channels": 1, "network_channels": 1,
                            "intensity": "unit", "output_kind": "softmax", "channels_last": False, "threshold": 0.5}},
        baseline=report_from_confusion(CLEAN_CM),
        attacks=attacks,
        eps_sweep={name: [SweepPoint(eps=e / 255, accuracy=max(0.05, 0.78 - f * e / 255))
                          for e in (0, 1, 2, 4, 8, 16)] for name, f in (("sia", 12.0), ("pgd", 20.0))},
        transfer=TransferMatrix(attack="sia@8/255", sources=["resnet18", "small-cnn"], targets=["small-cnn"],
                                success_rate=[[0.21], [0.55]], success_rate_correct=[[0.18], [0.62]]) if transfer else None,
        defenses=[defense] if defenses else [],
        detectors=[_detector("reference", {k: 0.9 - 0.1 * i for i, k in enumerate(keys)}, 0.05, reference_lines),
                   _detector("squeeze", {k: 0.7 - 0.1 * i for i, k in enumerate(keys)}, 0.05, squeeze_lines)]
        if detectors else [],
        robustness_score=RobustnessScore(value=41.25, definition="100 x accuracy under the strongest attack / clean accuracy"),
        seconds_per_image={"baseline": 0.001, "attacks": 0.1},
        seconds_total=12.5,
        certified=make_certified() if defenses else None,  # a complete run has certificates too
    )


def make_samples(metrics: RunMetrics) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    original = np.stack([np.clip(0.3 + 0.4 * np.sin(3 * xx + i) * yy + 0.05 * rng.standard_normal((32, 32)), 0, 1)
                         for i in range(K)]).astype(np.float32)
    arrays: dict[str, np.ndarray] = {
        "ids": np.array([f"img{i:03d}" for i in range(K)]), "labels": np.array([0, 1, 2, 2]),
        "classes": np.array(CLASSES), "original": original, "pred__original": np.array([0, 1, 2, 0]),
        "cam__original": np.stack([np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) * 8)] * K).astype(np.float32),
    }
    for a in metrics.attacks:
        adv = np.clip(original + a.eps * np.sign(rng.standard_normal(original.shape)), 0, 1).astype(np.float32)
        arrays[f"adv__{array_key(a.key)}"] = adv
        arrays[f"pred__adv__{array_key(a.key)}"] = np.array([2, 0, 0, 0])
        cam = np.exp(-((xx - 0.2) ** 2 + (yy - 0.8) ** 2) * 8)
        arrays[f"cam__adv__{array_key(a.key)}"] = np.stack([cam] * K).astype(np.float32)
    for d in metrics.defenses:
        for image_set in ["clean", *(a.key for a in metrics.attacks)]:
            arrays[f"def__{array_key(d.name)}__{array_key(image_set)}"] = original
            arrays[f"pred__def__{array_key(d.name)}__{array_key(image_set)}"] = np.array([0, 1, 2, 2])
    return arrays


HISTORY = [{"epoch": e, "phase": "head", "train_loss": 1.1 / e, "train_accuracy": 0.4 + 0.05 * e, "val_loss": 1.2 / e + 0.02 * e,
            "val_accuracy": 0.38 + 0.045 * e, "lr": 1e-3, "seconds": 1.0} for e in range(1, 9)]


def write_synthetic_run(run_dir: Path, *, transfer: bool = True, defenses: bool = True, detectors: bool = True,
                        samples: bool = True, history: bool = True) -> RunMetrics:
    """Write metrics.json (and optionally samples, model/model.json with history, a surrogate) into ``run_dir``."""
    metrics = make_metrics(transfer=transfer, defenses=defenses, detectors=detectors)
    write_metrics(metrics, run_dir)
    if samples:
        save_samples(run_dir, make_samples(metrics))
    meta = {"format": "medrobust-checkpoint/1", "arch": "small-cnn"}
    (run_dir / "model").mkdir(parents=True, exist_ok=True)
    (run_dir / "model" / "model.json").write_text(json.dumps({**meta, **({"history": HISTORY} if history else {})}))
    if transfer:
        (run_dir / "surrogates" / "resnet18").mkdir(parents=True, exist_ok=True)
        (run_dir / "surrogates" / "resnet18" / "model.json").write_text(json.dumps({**meta, "history": HISTORY[:5]}))
    return metrics


@pytest.fixture
def write_run():
    """:func:`write_synthetic_run`, for tests that build a run directory with some parts left out."""
    return write_synthetic_run


@pytest.fixture(scope="module")
def complete_run(tmp_path_factory) -> tuple[Path, RunMetrics, Path]:
    """A complete synthetic run directory, its metrics and its built report.html."""
    from medrobust.report import build_report

    run_dir = tmp_path_factory.mktemp("run")
    metrics = write_synthetic_run(run_dir)
    return run_dir, metrics, build_report(run_dir)


# --- the tagged numbers of statement.html / compare.html (data-source, data-field, data-format) -----------------

def _pointer_value(document, pointer: str):
    """The value at an RFC 6901 JSON Pointer (written here, apart from the code under test)."""
    node = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(token)] if isinstance(node, list) else node[token]
    return node


def _expected_text(value, fmt: str) -> str:
    """How a value of each format must read on the page (an independent statement of the rules)."""
    if value is None and fmt not in ("size", "budget", "eps", "pp"):
        return "n/a"
    if fmt == "pct":
        return f"{value * 100:.1f}%"
    if fmt == "interval":
        return f"{value[0] * 100:.1f}–{value[1] * 100:.1f}%"
    if fmt in ("text",):
        return str(value)
    if fmt == "int":
        return str(int(value))
    if fmt == "budget":
        return f"{value:g}/255"
    if fmt == "grey":
        return f"{value:.2f}"
    if fmt == "eps":
        levels = value * 255
        return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-3 else f"{value:.4g}"
    if fmt == "hu":
        return f"{float(value):g} HU"
    if fmt == "eps_hu":  # a CT budget: 1 HU is 1/4095 of the [0, 1] range
        return f"{round(value * 4095, 2):g} HU"
    if fmt == "pp":
        return f"{value:+.1f} pp"
    if fmt == "list":
        return ", ".join(str(v) for v in value)
    if fmt == "size":
        return " x ".join(str(v) for v in value) if value else "any"
    if fmt == "count":
        return str(len(value))
    if fmt == "status":
        return {"addressed": "addressed", "partly": "partly", "not_addressed": "not addressed"}[value]
    raise AssertionError(f"unknown data-format {fmt!r}")


class TaggedPage(HTMLParser):
    """The tagged values of a page (source, field, format, text as shown) and the visible text
    outside them (without <style> and <title>)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tagged: list[tuple[str, str, str, str]] = []
        self.outside: list[str] = []
        self.pieces: list[str] = []  # all visible text, in order
        self._current: dict | None = None
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("style", "title"):
            self._skip += 1
        elif "data-field" in a:
            assert self._current is None, "nested tagged values"
            self._current = {"source": a["data-source"], "field": a["data-field"], "format": a["data-format"],
                             "text": ""}

    def handle_endtag(self, tag):
        if tag in ("style", "title"):
            self._skip -= 1
        elif tag == "span" and self._current is not None:
            c = self._current
            self.tagged.append((c["source"], c["field"], c["format"], c["text"]))
            self._current = None

    def handle_data(self, data):
        if self._skip:
            return
        self.pieces.append(data)
        if self._current is not None:
            self._current["text"] += data
        else:
            self.outside.append(data)


def visible_text(html: str) -> str:
    """The page's text as a reader sees it (entities decoded, whitespace collapsed)."""
    return re.sub(r"\s+", " ", "".join(TaggedPage(html).pieces))


def check_tagged_values(html: str, documents: dict) -> TaggedPage:
    """Assert every tagged value on the page reads exactly as its JSON value formatted; returns the page."""
    page = TaggedPage(html)
    assert page.tagged, "no tagged value on the page"
    for source, field, fmt, text in page.tagged:
        value = _pointer_value(documents[source], field)
        assert text == _expected_text(value, fmt), (source, field, fmt, text, value)
    return page


@pytest.fixture
def tagged_page():
    """:func:`check_tagged_values`."""
    return check_tagged_values


@pytest.fixture
def page_text():
    """:func:`visible_text`."""
    return visible_text
