"""``build_report(run_dir)``: the run directory's figures (``figures/*.png``), one
self-contained ``report.html`` (its first section the scorecard), ``scorecard.json`` (rewritten
from metrics.json) and the printable ``statement.html``.

The report is a pure function of the run directory (DESIGN.md): it reads ``metrics.json``,
``samples/examples.npz`` and the checkpoints' training histories, never loads or runs a model,
and rebuilding it gives the same figures. Parts a run does not have (no transfer, defenses,
detectors or example images; a model without a training history) are replaced by a short note.
Files are written atomically, so an interrupted build never leaves half a report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import yaml

from medrobust._version import __version__
from medrobust.evaluation.certified_accuracy import largest_certifiable_radius
from medrobust.evaluation.per_image_table import PER_IMAGE_FILE
from medrobust.evaluation.results import METRICS_FILE
from medrobust.evaluation.run_dir import atomic_write_bytes, atomic_write_text
from medrobust.evaluation.scorecard import build_scorecard, write_scorecard
from medrobust.report import figures_classification as fc
from medrobust.report import figures_detection as fd
from medrobust.report import figures_images as fi
from medrobust.report import figures_robustness as fr
from medrobust.report import tables
from medrobust.report.evidence_html import evidence_table
from medrobust.report.fields import Fields
from medrobust.report.figure import ReportFigure
from medrobust.report.guard_section import guard_section
from medrobust.report.page import document, figure_html, note
from medrobust.report.run_contents import RunContents, budget_unit, pct
from medrobust.report.scorecard_html import scorecard_section
from medrobust.report.statement import build_statement
from medrobust.report.summary import build_summary

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
FIGURES_DIR = "figures"

REPORT_FIGURES: dict[str, str] = {
    "01_baseline_confusion": "Baseline confusion matrix",
    "02_training_curves": "Training and validation accuracy and loss",
    "03_classwise_accuracy": "Class-wise accuracy",
    "04_original_vs_attack": "Original vs adversarial image",
    "05_confusion_after_attack": "Confusion matrix after attack",
    "06_accuracy_drop_per_class": "Accuracy drop per class",
    "07_original_attack_defended": "Original vs adversarial vs defended",
    "08_confusion_after_defense": "Confusion matrix after defense",
    "09_classwise_after_defense": "Class-wise accuracy after defense",
    "10_detection_accuracy": "Detection accuracy",
    "11_detection_samples": "Detection samples",
    "12_detection_summary": "Detection success summary",
    "13_perturbation_heatmaps": "Amplified perturbations",
    "14_gradcam": "Grad-CAM on original and adversarial images",
    "15_accuracy_vs_epsilon": "Accuracy versus epsilon",
    "16_detector_roc": "ROC curves of the detectors",
    "17_transfer_matrix": "Transfer matrix",
    "18_adaptive_defense": "Adaptive versus non-adaptive defense",
    "19_certified_accuracy": "Certified accuracy versus L2 radius",
}
"""Every figure a complete run's report holds: id (file ``figures/<id>.png`` and HTML anchor) -> title.
Figures 01-12 are the study's; 13-19 go further."""


class _Builder:
    """Draws figures, collecting them and a note for each one that a run cannot have."""

    def __init__(self) -> None:
        self.figures: list[ReportFigure] = []

    def figure(self, figure_id: str, missing: str, draw: Callable[[], ReportFigure | None]) -> str:
        """The figure's HTML, or ``missing`` as a note when it cannot be drawn from this run."""
        try:
            fig = draw()
        except Exception as err:  # a figure that fails must not cost the whole report
            log.warning("figure %s could not be drawn: %s", figure_id, err, exc_info=True)
            return note(f"{REPORT_FIGURES[figure_id]}: could not be drawn ({err}).")
        if fig is None:
            return note(f"{REPORT_FIGURES[figure_id]}: {missing}")
        assert fig.id == figure_id, (fig.id, figure_id)
        self.figures.append(fig)
        return figure_html(fig)


def _data_and_model(b: _Builder, c: RunContents) -> str:
    parts = ["<h3>Data</h3>", tables.key_values(c.metrics.data), "<h3>Model</h3>", tables.key_values(c.metrics.model),
             b.figure("02_training_curves", "the model was loaded, not trained in this run (no training history).",
                      lambda: fc.training_curves(c.history))]
    if c.surrogate_histories:
        rows = [[name, len(h), f"{100 * h[-1]['val_accuracy']:.1f}%" if h else "n/a"]
                for name, h in c.surrogate_histories.items()]
        parts += ["<h3>Surrogate models (for transfer attacks)</h3>",
                  tables.table(["surrogate", "epochs trained", "final validation accuracy"], rows)]
    return "\n".join(parts)


def _baseline(b: _Builder, c: RunContents) -> str:
    return "\n".join([tables.classification(c.metrics.baseline),
                      b.figure("01_baseline_confusion", "", lambda: fc.baseline_confusion(c.metrics)),
                      b.figure("03_classwise_accuracy", "", lambda: fc.classwise_accuracy(c.metrics))])


def _attacks(b: _Builder, c: RunContents) -> str:
    main = c.main_attack()
    if main is None:
        return note("This run has no attack results.")
    no_images = "no example images for this attack in samples/examples.npz."
    return "\n".join([
        tables.attacks(c.metrics.attacks, budget_unit(c.metrics)),
        b.figure("04_original_vs_attack", no_images, lambda: fi.original_vs_attack(c, main)),
        b.figure("05_confusion_after_attack", "", lambda: fc.confusion_after_attack(main)),
        b.figure("06_accuracy_drop_per_class", "", lambda: fc.accuracy_drop_per_class(c.metrics.attacks, c.classes)),
        b.figure("13_perturbation_heatmaps", no_images, lambda: fi.perturbation_heatmaps(c, c.metrics.attacks)),
        b.figure("14_gradcam", "no Grad-CAM heatmaps in samples/examples.npz.", lambda: fi.gradcam(c, main)),
        "<h3>Attack parameters</h3>", tables.attack_params(c.metrics.attacks),
        tables.model_checks(c.metrics.model_checks),
        _per_image_link(c),
    ])


def _per_image_link(c: RunContents) -> str:
    """A link to the run's per-image table, when it has one (runs before it existed do not)."""
    if not (c.run_dir / PER_IMAGE_FILE).is_file():
        return ""
    return (f'<p>Per image: <a href="{PER_IMAGE_FILE}">{PER_IMAGE_FILE}</a> in the run folder, one row per attacked '
            "image and attack: its true class, the model's answer before and after the attack, the budget, the "
            "defended model's answer under each defense and whether each detector flagged it.</p>")


def _sweep(b: _Builder, c: RunContents) -> str:
    if not any(c.metrics.eps_sweep.values()):
        return note("This run has no epsilon sweep.")
    return "\n".join([b.figure("15_accuracy_vs_epsilon", "", lambda: fr.accuracy_vs_epsilon(c.metrics.eps_sweep, c.metrics)),
                      tables.sweeps(c.metrics.eps_sweep, budget_unit(c.metrics))])


def _transfer(b: _Builder, c: RunContents) -> str:
    transfer = c.metrics.transfer
    if transfer is None:
        return note("This run has no transfer matrix (no surrogate models).")
    return b.figure("17_transfer_matrix", "the transfer matrix is empty.", lambda: fr.transfer_matrix(transfer))


def _defenses(b: _Builder, c: RunContents) -> str:
    defense, main = c.main_defense(), c.main_attack()
    if defense is None:
        return note("This run has no defenses.")
    parts = [tables.defenses(c.metrics.defenses)]
    for d in c.metrics.defenses:
        if d.adaptive_members:
            parts += [f"<h3>Adaptive attackers against {escape(d.name)}</h3>",
                      note("The adaptive accuracy is the worst case per image: an image counts only when the defended "
                           "model is right on it clean and under every attack below (Athalye et al. 2018; Croce & Hein "
                           "2020)."),
                      tables.adaptive_portfolio(d, budget_unit(c.metrics))]
    if main is not None:
        parts.append(b.figure("07_original_attack_defended", "no defended example images in samples/examples.npz.",
                              lambda: fi.original_attack_defended(c, main, defense)))
    parts += [b.figure("08_confusion_after_defense", "", lambda: fc.confusion_after_defense(defense, main)),
              b.figure("09_classwise_after_defense", "", lambda: fc.classwise_after_defense(c.metrics, defense, main)),
              b.figure("18_adaptive_defense", "", lambda: fr.adaptive_defense(c.metrics))]
    return "\n".join(parts)


def _detection(b: _Builder, c: RunContents) -> str:
    detectors = c.metrics.detectors
    if not detectors:
        return note("This run has no detectors.")
    parts = [tables.detectors(detectors),
             b.figure("10_detection_accuracy", "", lambda: fd.detection_rates(detectors)),
             b.figure("12_detection_summary", "", lambda: fd.detection_summary(detectors)),
             b.figure("16_detector_roc", "no ROC curves recorded.", lambda: fd.detector_roc(detectors)),
             b.figure("11_detection_samples", "no per-image log lines recorded.",
                      lambda: fd.detection_samples(c, detectors, c.main_attack()))]
    for d in detectors:
        if d.log_lines:
            parts += [f"<h3>Log lines of the {escape(d.name)} detector (a sample)</h3>",
                      "<pre>" + escape("\n".join(d.log_lines)) + "</pre>"]
    return "\n".join(parts)


def _certified(b: _Builder, c: RunContents) -> str:
    """Randomized smoothing's certificates: what they guarantee (and for what), the table at the
    report's radii, the curve, the smoothed and base clean accuracies and the abstentions."""
    cert = c.metrics.certified
    if cert is None:
        return note("This run computed no certificate (randomized smoothing: medrobust evaluate --certify, best on a "
                    "model trained under the same noise, train.noise_sigma).")
    parts = [f"<p>Certified robustness by randomized smoothing (Cohen, Rosenfeld &amp; Kolter 2019) on the "
             f"{cert.n} attack images: Gaussian noise of standard deviation {cert.sigma:g} ([0, 1] image units, not "
             f"clipped), {cert.n0} draws to choose the class and {cert.draws:,} to bound its probability at "
             f"alpha = {cert.alpha:g}, so no image can be certified beyond an L2 radius of "
             f"{largest_certifiable_radius(cert.sigma, cert.draws, cert.alpha):.2f} (every draw for the class; more "
             "draws reach farther). <b>The certificate holds for the smoothed classifier (noise, then the base "
             "model's majority vote), not for the base model answering once</b>; it is a guarantee, kept apart "
             "from the empirical scores above and never part of the overall score.</p>",
             tables.certified(cert),
             f"<p>The smoothed classifier's clean accuracy: {pct(cert.smoothed_clean_accuracy)} (it abstains on "
             f"{pct(cert.smoothed_abstention_rate)}); the base model's on the same images: "
             f"{pct(cert.base_clean_accuracy)}. CERTIFY abstains on {pct(cert.abstention_rate)} of the images.</p>",
             b.figure("19_certified_accuracy", "", lambda: fr.certified_accuracy(cert))]
    if cert.note:
        parts.insert(1, note(f"Note: {cert.note}."))
    return "\n".join(parts)


def _methods(c: RunContents) -> str:
    try:
        config = yaml.safe_dump(c.metrics.config, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        config = json.dumps(c.metrics.config, indent=2, default=str)
    return "\n".join(["<h3>Configuration (as resolved for this run)</h3>", f"<pre>{escape(config)}</pre>",
                      "<h3>Time</h3>", tables.timings(c.metrics.seconds_per_image, c.metrics.seconds_total)])


def _requirements(fields: Fields) -> str:
    """The requirements traced (the statement's table), after the scorecard."""
    table = evidence_table(fields)
    return f"<h3>Requirements traced</h3>\n{table}" if table else ""


def build_report(run_dir: str | Path) -> Path:
    """Write ``run_dir/scorecard.json`` (from metrics.json), ``run_dir/figures/<id>.png`` for every
    figure the run allows, ``run_dir/report.html`` and ``run_dir/statement.html``; returns the path
    of report.html. Raises ``FileNotFoundError`` without a metrics.json."""
    run_dir = Path(run_dir)
    contents = RunContents.read(run_dir)
    metrics = contents.metrics
    scorecard_path = write_scorecard(build_scorecard(metrics), run_dir)
    fields = Fields(scorecard=json.loads(scorecard_path.read_text()),
                    metrics=json.loads((run_dir / METRICS_FILE).read_text()))
    b = _Builder()
    summary = build_summary(contents)
    sections = [
        ("scorecard", "Scorecard", scorecard_section(fields) + _requirements(fields)),
        ("summary", "Summary", summary.html),
        ("data-model", "Data and model", _data_and_model(b, contents)),
        ("baseline", "Baseline", _baseline(b, contents)),
        ("attacks", "Attacks", _attacks(b, contents)),
        ("eps-sweep", "Epsilon sweep", _sweep(b, contents)),
        ("transfer", "Transfer", _transfer(b, contents)),
        ("defenses", "Defenses", _defenses(b, contents)),
        ("detection", "Detection", _detection(b, contents)),
        ("guard", "Guarded model", guard_section(metrics.guard)),
        ("certified", "Certified robustness", _certified(b, contents)),
        ("methods", "Methods and settings", _methods(contents)),
    ]
    figures_dir = run_dir / FIGURES_DIR
    for fig in b.figures:
        atomic_write_bytes(figures_dir / fig.filename, fig.png)
    produced = {fig.id for fig in b.figures}
    for stale in set(REPORT_FIGURES) - produced:  # a rebuilt report never shows an older run's figure
        (figures_dir / f"{stale}.png").unlink(missing_ok=True)
    built = datetime.now(UTC).isoformat(timespec="seconds")
    footer = (f"medrobust {escape(metrics.medrobust_version)} (run created {escape(metrics.created)}); "
              f"report built by medrobust {escape(__version__)} at {built} from {escape(str(run_dir.name))}.")
    title, version = metrics.config.get("title"), metrics.config.get("model_version")
    counts = (f"{len(metrics.attacks)} attacks, {len(metrics.defenses)} defenses, {len(metrics.detectors)} detectors; "
              f"classes {', '.join(metrics.baseline.classes)}")
    html = document(f"Robustness report: {title} ({metrics.name})" if title else f"Robustness report: {metrics.name}",
                    (f"model version {version}; " if version else "") + counts, sections, footer)
    path = atomic_write_text(run_dir / REPORT_FILE, html)
    log.info("wrote %s (%d figures)", path, len(b.figures))
    build_statement(run_dir)
    return path
