"""``RUN/statement.html``: a printable one-page robustness statement for a technical file.

What was tested and what was found, in the order a reviewer reads it: the model's identity
(file, SHA-256, classes, input contract), the data (source, images per class, split), the
threat models and budgets, the scorecard, the defenses' cost on clean images, the detectors'
false alarms (clean images and benign pipeline changes), the software version and seed, the
limitations, and the requirements traced clause by clause to the rows that address them
(:mod:`medrobust.report.evidence_html`) — never a verdict of compliance. Every number is a
tagged field of scorecard.json or metrics.json (:mod:`medrobust.report.fields`); nothing is recomputed here.

The page is plain self-contained HTML (no script, no external resource, no interactive element)
with print CSS (A4, margins, no page break inside a table row), so a browser's print gives a
clean PDF.
"""

from __future__ import annotations

import json
import logging
from html import escape
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medrobust.evaluation.results import METRICS_FILE, GuardOutcome, read_metrics
from medrobust.evaluation.run_dir import atomic_write_text
from medrobust.evaluation.scorecard import (
    SCHEMA_VERSION,
    SCORECARD_FILE,
    build_scorecard,
    read_scorecard,
    write_scorecard,
)
from medrobust.report.evidence_html import evidence_table
from medrobust.report.fields import Fields, pointer
from medrobust.report.guard_section import guard_statement
from medrobust.report.run_contents import noise_how
from medrobust.report.scorecard_html import (
    SC,
    budget_columns,
    certified_html,
    definitions_html,
    not_tested_html,
    overall_html,
    scorecard_table,
)

log = logging.getLogger(__name__)

STATEMENT_FILE = "statement.html"
M = "metrics"

LIMITATIONS = [
    "Physical-world attacks (printed, re-photographed or re-acquired images): every attack here changes stored pixels.",
    "Data or model poisoning, tampering with the model file, model inversion or stealing, data leakage.",
    "Other modalities (CT, MRI, dermatology, fundus), views, sites and classes than those above.",
    "Budgets beyond the largest tested, other norms (L2, L0, patches, spatial transforms), attacks unknown today: "
    "a stronger attacker may do better than the attacks run here.",
    "Other populations, scanners or protocols: the confidence intervals cover the sampling of these test images only.",
]


CSS = """
@page { size: A4; margin: 8mm 10mm 8mm 10mm; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 7.1pt; line-height: 1.24; color: #14202c;
       margin: 0; }
main { max-width: 188mm; margin: 0 auto; }
h1 { font-size: 13pt; margin: 0 0 1mm; }
h2 { font-size: 8.6pt; margin: 2mm 0 0.7mm; border-bottom: 0.6pt solid #9aa7b4; padding-bottom: 0.3mm;
     break-after: avoid; page-break-after: avoid; }
p { margin: 0.6mm 0; }
.lead { color: #3c4a58; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 4mm; }
.grid.wide-right { grid-template-columns: 2fr 3fr; }
.grid > section { min-width: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.8mm 0; }
th, td { border: 0.4pt solid #b9c3cd; padding: 0.5mm 1mm; text-align: left; vertical-align: top; }
th { background: #e9eef3; font-weight: 600; }
tr, td, th { break-inside: avoid; page-break-inside: avoid; }
thead { display: table-header-group; }
table.kv td:first-child { width: 21%; font-weight: 600; white-space: nowrap; }
table.scorecard { font-size: 6.9pt; }
table.scorecard td:first-child { width: 15%; }
table.scorecard th:nth-last-child(3) { width: 15%; }
table.scorecard th:nth-last-child(2) { width: 14%; }
table.scorecard th:nth-last-child(4) { width: 8%; }
.small { font-size: 6.3pt; color: #4a5866; }
.na { color: #6a7582; font-style: italic; }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 6.8pt; word-break: break-all; }
.overall { margin: 1mm 0; }
.overall-label { font-weight: 700; }
.overall-value { font-weight: 700; font-size: 10pt; }
.definition, ul.definitions { color: #3c4a58; font-size: 6.5pt; }
ul.definitions { columns: 3; column-gap: 4mm; font-size: 6.2pt; margin-left: 3mm; }
ul.definitions li { break-inside: avoid; }
ul { margin: 0.4mm 0 0.4mm 4mm; padding: 0; }
li { margin: 0.2mm 0; }
.disclaimer { border-left: 1.5pt solid #3b6ea8; padding-left: 2mm; color: #3c4a58; }
table.evidence { font-size: 6.3pt; }
table.evidence td:nth-child(1) { width: 11%; }
table.evidence td:nth-child(2) { width: 27%; }
table.evidence td:nth-child(3) { width: 24%; }
table.evidence td:nth-child(4) { width: 7%; white-space: nowrap; }
table.evidence ul { margin: 0 0 0 2.5mm; }
td.status { font-weight: 700; }
td.status.addressed { color: #1f6b3a; }
td.status.partly { color: #8a5a00; }
td.status.not_addressed { color: #a1262b; }
a { color: inherit; text-decoration: none; border-bottom: 0.3pt dotted #6a7582; }
ul.limitations { columns: 2; column-gap: 4mm; }
@media screen { body { background: #f1f3f6; } main { background: white; padding: 10mm 12mm; margin: 5mm auto; } }
"""


def _na(text: str) -> str:
    return f'<span class="na">{escape(text)}</span>'


def _kv(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><td>{escape(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="kv"><tbody>{body}</tbody></table>'


def _field_or(f: Fields, source: str, ptr: str, fmt: str, missing: str, css: str = "") -> str:
    if f.has(source, ptr) and f.value(source, ptr) not in (None, "", [], {}):
        return f.span(source, ptr, fmt, css)
    return _na(missing)


def _model(f: Fields) -> str:
    model = f.documents[SC]["model"]
    contract = model.get("contract") or {}
    if contract.get("classes"):
        classes = f.span(SC, "/model/contract/classes", "list")
    else:
        classes = _field_or(f, SC, "/data/classes", "list", "not recorded")
    if contract:
        parts = [f"size {_field_or(f, SC, '/model/contract/input_size', 'size', 'any size')}",
                 f"stored channels {_field_or(f, SC, '/model/contract/stored_channels', 'int', 'not recorded')}",
                 f"network channels {_field_or(f, SC, '/model/contract/network_channels', 'int', 'not recorded')}",
                 f"intensity {_field_or(f, SC, '/model/contract/intensity', 'text', 'not recorded')}",
                 f"outputs {_field_or(f, SC, '/model/contract/output_kind', 'text', 'not recorded')}"]
        contract_html = ", ".join(parts)
    else:
        contract_html = _na("not recorded")
    return _kv([
        ("model file", _field_or(f, SC, "/model/file", "text", "not recorded (a model held in memory)", "mono")),
        *([("version", f.span(SC, "/model/version", "text"))] if model.get("version") else []),
        ("SHA-256", _field_or(f, SC, "/model/sha256", "text", "not recorded (no file to read)", "mono")),
        ("architecture", f"{_field_or(f, SC, '/model/arch', 'text', 'not recorded')}, "
                         f"{_field_or(f, SC, '/model/parameters', 'int', 'not recorded')} parameters"),
        ("classes", classes),
        ("input", contract_html),
    ])


def _data(f: Fields) -> str:
    metrics = f.documents[M]
    data = f.documents[SC]["data"]
    split = data.get("split")
    if split == "test":
        split_html = "every image is a test image (the model was trained elsewhere)"
    elif isinstance(split, list) and len(split) == 3:
        seed = (f" with seed {f.span(M, '/config/data/split_seed', 'int')}"
                if f.has(M, "/config/data/split_seed") else "")
        split_html = (f"train {f.span(SC, '/data/split/0', 'pct')}, validation {f.span(SC, '/data/split/1', 'pct')}, "
                      f"test {f.span(SC, '/data/split/2', 'pct')}{seed}")
    else:
        split_html = _na("not recorded")
    n = data.get("n") or {}
    if n:
        split_html += "; images: " + ", ".join(f"{escape(k)} {f.span(SC, pointer('data', 'n', k), 'int')}" for k in n)
    per_class = metrics["baseline"]["per_class"]
    test_per_class = ", ".join(
        f"{escape(c)} {f.span(M, pointer('baseline', 'per_class', c, 'support'), 'int')}" for c in per_class)
    rows = [("source", _field_or(f, SC, "/data/source", "text", "not recorded", "mono")),
            ("split", split_html),
            ("test images", test_per_class + f" (total {f.span(M, '/baseline/n', 'int')})")]
    attacks = metrics.get("attacks") or []
    if attacks:
        clean = attacks[0]["clean"]["per_class"]
        rows.append(("attacked images", ", ".join(
            f"{escape(c)} {f.span(M, pointer('attacks', 0, 'clean', 'per_class', c, 'support'), 'int')}"
            for c in clean) + f" (total {f.span(M, '/attacks/0/clean/n', 'int')}, a stratified subset of the test set)"))
    rows.append(("normal class", _field_or(f, SC, "/data/normal_class", "text",
                                           "none identified: dangerous flips not assessed")))
    return _kv(rows)


def _ct_budget_note(f: Fields, sc: dict) -> str:
    """What a CT budget means: the most any voxel may change, in HU, beside the data's noise."""
    noise = (sc.get("data") or {}).get("noise") or {}
    largest = max((p.get("value") or 0.0 for r in sc["rows"] for p in r["points"]), default=0.0)
    text = ("A budget is the most any voxel of the stored CT image may change, in Hounsfield units (HU); "
            f"the largest tested is {largest:g} HU.")
    if noise.get("std") is None:
        return text + " The image noise of the data was not measured."
    how = noise_how(str(noise.get("method", "")))
    side = "below" if largest < noise["std"] else "not below"
    return (text + f" The image noise of the data, its standard deviation in a homogeneous region ({how}), is "
            f"{f.span(SC, '/data/noise/std', 'hu')}: " + (
                "every tested budget is below it." if side == "below" else "the largest tested budget is not below it."))


def _threats(f: Fields) -> str:
    sc = f.documents[SC]
    if not sc["rows"]:
        return f"<p>{_na('No threat model was tested.')}</p>"
    items = []
    ct = ((sc.get("data") or {}).get("grid") or {}).get("unit") == "HU"
    for i, row in enumerate(sc["rows"]):
        budgets = ", ".join(f.span(SC, pointer("rows", i, "points", j, "value" if ct else "grey_levels"),
                                   "hu" if ct else "budget")
                            for j, p in enumerate(row["points"]) if p["grey_levels"] > 0)
        attacks = ", ".join(f.span(SC, pointer("rows", i, "attacks", k), "text") for k in range(len(row["attacks"])))
        main = "" if ct else f" (main {f.span(SC, pointer('rows', i, 'main_eps'), 'eps')})"
        items.append(f"<li><b>{f.span(SC, pointer('rows', i, 'label'), 'text')}</b>: L-inf budgets {budgets or _na('none')}"
                     f"{main}; attacks {attacks}.</li>")
    if ct:
        return f"<ul>{''.join(items)}</ul><p>{_ct_budget_note(f, sc)}</p>"
    largest = budget_columns(sc)
    ceiling = f" The largest budget tested is {f.span(SC, largest[-1][1], 'budget')} of the grey range." if largest else ""
    grid = ", ".join(f.span(SC, pointer("grid", j), "eps") for j in range(len(sc.get("grid") or [])))
    scored = (f" Every row is scored on the one grid {grid}; a row not measured at each of its budgets has no score."
              if grid else "")
    return (f"<ul>{''.join(items)}</ul><p>A budget is the most any pixel of the stored image may change, in grey "
            f"levels of its full range.{ceiling}{scored}</p>")


def _defenses_and_detectors(f: Fields) -> tuple[str, str]:
    """The defenses' clean accuracy and cost; the detectors' false alarms (clean, benign changes)."""
    metrics = f.documents[M]
    parts = []
    if metrics.get("defenses"):
        rows = []
        for i, _ in enumerate(metrics["defenses"]):
            d = pointer("defenses", i)
            rows.append(f"<tr><td>{f.span(M, d + '/name', 'text')}</td>"
                        f"<td>{f.span(M, d + '/clean/accuracy', 'pct')}</td>"
                        f"<td>{f.span(M, d + '/clean_cost_pp', 'pp')}</td></tr>")
        parts.append("<table><thead><tr><th>defense</th><th>clean accuracy with it</th><th>cost (points lost)</th>"
                     "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    else:
        parts.append(f"<p>{_na('No defense was tested.')}</p>")
    if metrics.get("detectors"):
        rows = []
        for i, det in enumerate(metrics["detectors"]):
            d = pointer("detectors", i)
            benign = "; ".join(f"{escape(k)} {f.span(M, pointer('detectors', i, 'fpr_benign', k), 'pct')}"
                               for k in det.get("fpr_benign", {})) or _na("not measured")
            calibration = _field_or(f, M, d + "/calibration", "text", "fixed thresholds (no calibration)")
            rows.append(f"<tr><td>{f.span(M, d + '/name', 'text')}</td><td>{f.span(M, d + '/fpr_clean', 'pct')}</td>"
                        f"<td>{benign}</td><td>{calibration}</td></tr>")
        parts.append("<table><thead><tr><th>detector</th><th>on clean images</th><th>on benign pipeline changes</th>"
                     "<th>threshold set on</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")
    else:
        parts.append(f"<p>{_na('No detector was tested.')}</p>")
    return parts[0], parts[1]


def _software(f: Fields) -> str:
    """Software version, seed and run, in one sentence."""
    return (f"Run <b>{f.span(SC, '/run', 'text')}</b>, created {f.span(SC, '/created', 'text')} by medrobust "
            f"{f.span(SC, '/medrobust_version', 'text')} with seed {_field_or(f, SC, '/seed', 'int', 'not recorded')}. "
            "Every value on this page is copied from metrics.json and scorecard.json of the run folder; the resolved "
            "configuration is in its config.yaml.")


def _limitations(f: Fields) -> str:
    items = "".join(f"<li>{escape(text)}</li>" for text in LIMITATIONS)
    return (f'{not_tested_html(f)}<div class="also"><b>Nor, by any threat model here:</b>'
            f'<ul class="limitations">{items}</ul></div>')


def _section(name: str, html: str, section_id: str = "") -> str:
    anchor = f' id="{escape(section_id)}"' if section_id else ""
    return f"<section{anchor}><h2>{escape(name)}</h2>\n{html}\n</section>"


def _pair(left: tuple[str, ...], right: tuple[str, ...], css: str = "") -> str:
    return f'<div class="grid {css}">{_section(*left)}{_section(*right)}</div>'


def _guard_outcome(metrics: dict[str, Any]) -> GuardOutcome | None:
    """metrics.json's guard figures as their type (None: no guard stage)."""
    return GuardOutcome.model_validate(metrics["guard"]) if metrics.get("guard") else None


def statement_html(scorecard: dict[str, Any], metrics: dict[str, Any]) -> str:
    """The statement's HTML from the parsed scorecard.json and metrics.json."""
    f = Fields(scorecard=scorecard, metrics=metrics)
    title = f"Adversarial robustness statement: {scorecard.get('title') or scorecard['run']}"
    defenses, detectors = _defenses_and_detectors(f)
    body = "\n".join([
        _pair(("Model", _model(f)), ("Data", _data(f))),
        _section("Threat models and budgets", _threats(f) + guard_statement(_guard_outcome(metrics))),
        _section("Scorecard", overall_html(f) + scorecard_table(f), "scorecard"),
        *([_section("Certified robustness (a guarantee, apart from the scores)", certified_html(f))]
          if scorecard.get("certified") else []),
        _pair(("Defenses: cost on clean images", defenses), ("Detectors: false alarms", detectors, "detection"),
              "wide-right"),
        _section("Limitations: what was not tested", _limitations(f)),
        *([_section("Requirements traced", evidence_table(f), "requirements")] if scorecard.get("evidence") else []),
        _section("Definitions", definitions_html(f, [k for k in scorecard["definitions"]
                                                     if k not in ("overall", "certified", "evidence")])),  # beside their figures
    ])
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
            f"<h1>Adversarial robustness statement{': ' + f.span(SC, '/title', 'text') if scorecard.get('title') else ''}"
            "</h1>\n"
            f'<p class="lead">How far the model\'s answers change under small, deliberate changes to its input images, '
            "what was tested, and what was not. "
            f"{_software(f)}</p>\n"
            f"{body}\n</main>\n</body>\n</html>\n")


def load_or_build_scorecard(run_dir: Path) -> Path:
    """``RUN/scorecard.json``: kept when it reads as the current schema, else (re)written from
    metrics.json (runs made before the scorecard existed, or an older schema: a version-1 file
    reads, but has no requirements traced)."""
    path = run_dir / SCORECARD_FILE
    if path.is_file():
        try:
            version = read_scorecard(run_dir).schema_version
            if version >= SCHEMA_VERSION:
                return path
            log.info("%s: schema version %d; rewriting it as version %d from %s", path, version, SCHEMA_VERSION,
                     METRICS_FILE)
        except (ValueError, ValidationError) as err:
            log.warning("%s: unreadable (%s); rebuilding it from %s", path, err, METRICS_FILE)
    return write_scorecard(build_scorecard(read_metrics(run_dir)), run_dir)


def build_statement(run_dir: str | Path) -> Path:
    """Write ``run_dir/statement.html`` from the run's scorecard.json (written first from
    metrics.json when missing) and metrics.json; returns its path. Raises ``FileNotFoundError``
    without a metrics.json."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / METRICS_FILE
    if not metrics_path.is_file():
        read_metrics(run_dir)  # the clear error
    scorecard_path = load_or_build_scorecard(run_dir)
    scorecard = json.loads(scorecard_path.read_text())
    metrics = json.loads(metrics_path.read_text())
    path = atomic_write_text(run_dir / STATEMENT_FILE, statement_html(scorecard, metrics))
    log.info("wrote %s", path)
    return path
