"""Scorecards of several runs side by side (``medrobust compare``, ``mr.compare``), with the
differences that exceed the statistical noise of the test set marked.

Rows are matched by their label across runs (``white-box gradient attacker``, ``jpeg+tv,
adaptive attacker (worst case)``...); a row a run lacks is "not tested" there. Each accuracy (clean,
and at each tested budget) of each run is compared with the same accuracy of the first run (the
reference). The rule: a difference is beyond noise when the two 95% Wilson score intervals
(scorecard.json's ``interval``) do not overlap. It is conservative — two non-overlapping 95%
intervals mean a difference well beyond the usual 5% test level — so an unmarked difference
is not proof that the runs are equal, and a marked one is unlikely to be chance alone. Scores,
half-accuracy budgets and dangerous-flip rates are shown side by side, unmarked (they carry no
interval). Nothing is recomputed: every number is a field of a run's scorecard.json (or of the
scorecard built from its metrics.json, for a run made before scorecard.json existed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medrobust.evaluation.results import METRICS_FILE, read_metrics
from medrobust.evaluation.run_dir import atomic_write_text
from medrobust.evaluation.scorecard import SCORECARD_FILE, Scorecard, build_scorecard
from medrobust.report.fields import Fields, pointer
from medrobust.report.page import CSS as REPORT_CSS

RULE = ("A difference is marked as beyond noise when the 95% Wilson score intervals of the two accuracies (each over "
        "the images that run tested) do not overlap; each run is compared with the first (the reference). The rule "
        "is conservative: an unmarked difference may still be real, and equal numbers are not proof of equal "
        "robustness.")
NOT_TESTED = "not tested"


@dataclass(frozen=True)
class Accuracy:
    """One accuracy of one run, with its 95% Wilson interval (None: no image) and where it is in
    scorecard.json (a JSON Pointer)."""

    value: float
    interval: tuple[float, float] | None
    n: int
    pointer: str


@dataclass(frozen=True)
class Measure:
    """One accuracy (clean, or at one budget) of one threat model, in every run.

    ``values[i]``: run i's accuracy, None when run i did not test it. ``change[i]``: run i
    against the reference (run 0): ``"higher"`` or ``"lower"`` when beyond noise, ``"within
    noise"`` when not, None when it cannot be compared (run 0 itself, a value or an interval
    missing)."""

    name: str  # "clean accuracy" or "accuracy at 8/255"
    grey_levels: float | None  # the budget in grey levels; None for the clean accuracy
    values: list[Accuracy | None]
    change: list[str | None]

    def beyond_noise(self, run: int) -> bool:
        return self.change[run] in ("higher", "lower")


@dataclass(frozen=True)
class ComparedRow:
    """One threat model (matched by label) across the runs; ``index[i]``: its position in run i's
    scorecard rows, None when run i did not test it."""

    label: str
    threat_model: str
    index: list[int | None]
    measures: list[Measure]


@dataclass(frozen=True)
class ComparedRun:
    run_dir: Path
    name: str
    scorecard: Scorecard
    from_metrics: bool  # the scorecard was built from metrics.json (no scorecard.json in the run)


@dataclass
class Comparison:
    """The runs' scorecards matched row by row (:func:`medrobust.layer.compare.compare`).

    Args:
        runs: the runs compared, the reference first.
        rows: one per threat model (matched by label), each with its accuracies in every run.
        rule: when a difference is marked as beyond noise, in words. Default :data:`RULE`.
        html: the page written, if any. Default None.
        documents: each run's scorecard, as JSON. Default: empty.
    """

    runs: list[ComparedRun]
    rows: list[ComparedRow]
    rule: str = RULE
    html: Path | None = None
    documents: list[dict[str, Any]] = field(default_factory=list, repr=False)  # each run's scorecard, as JSON

    def incomparable(self) -> list[str]:
        """Sentences saying where a run tested something other than the reference (image size,
        images, attacks, budgets): its differences are then not only the model's."""
        return differences_in_setup(self.documents)

    def differences(self) -> list[tuple[ComparedRow, Measure, int]]:
        """(row, measure, run) for every accuracy that differs from the reference beyond noise."""
        return [(r, m, i) for r in self.rows for m in r.measures for i in range(len(self.runs)) if m.beyond_noise(i)]

    def row(self, label: str) -> ComparedRow:
        for r in self.rows:
            if r.label == label:
                return r
        raise KeyError(f"no row {label!r}; have {[r.label for r in self.rows]}")


def read_run_scorecard(run_dir: str | Path) -> tuple[dict[str, Any], bool]:
    """A run's scorecard as JSON: scorecard.json, else built from metrics.json (nothing written)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: not a folder; pass run directories (each holds metrics.json)")
    path = run_dir / SCORECARD_FILE
    if path.is_file():
        try:
            document = json.loads(path.read_text())
            Scorecard.model_validate(document)
            return document, False
        except (ValueError, ValidationError) as err:
            if not (run_dir / METRICS_FILE).is_file():
                raise ValueError(f"{path}: not a readable scorecard ({str(err).splitlines()[0]}); rebuild it with "
                                 f"`medrobust report {run_dir}`") from None
    return build_scorecard(read_metrics(run_dir)).model_dump(mode="json"), True


def _grid(row: dict[str, Any]) -> list[float]:
    return sorted(round(p["grey_levels"], 6) for p in row["points"] if p["grey_levels"] > 0)


def differences_in_setup(documents: Sequence[dict[str, Any]]) -> list[str]:
    """What each run tested differently from the first (see :meth:`Comparison.incomparable`)."""
    ref = documents[0]
    out = []
    for doc in documents[1:]:
        who = f"{doc['run']} and {ref['run']}"
        for key, what in (("size", "image size"), ("source", "images"), ("attack_images", "number of attacked images")):
            a, b = ref["data"].get(key), doc["data"].get(key)
            if a != b:
                out.append(f"{who} tested a different {what} ({b} vs {a})")
        rows = {r["label"]: r for r in ref["rows"]}
        for row in doc["rows"]:
            other = rows.get(row["label"])
            if other is None:
                continue
            if _grid(row) != _grid(other):
                out.append(f"{who} tested {row['label']} at other budgets ({_grids_text(row)} vs {_grids_text(other)})")
            elif sorted(row["attacks"]) != sorted(other["attacks"]):
                out.append(f"{who} tested {row['label']} with other attacks ({', '.join(row['attacks'])} vs "
                           f"{', '.join(other['attacks'])})")
    return out


def _grids_text(row: dict[str, Any]) -> str:
    return ", ".join(f"{g:g}/255" for g in _grid(row)) or "no budget"


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _change(reference: Accuracy | None, other: Accuracy | None) -> str | None:
    if reference is None or other is None or reference.interval is None or other.interval is None:
        return None
    if _overlap(reference.interval, other.interval):
        return "within noise"
    return "higher" if other.value > reference.value else "lower"


def _measure(name: str, grey: float | None, values: list[Accuracy | None], same_grid: list[bool]) -> Measure:
    """``same_grid[i]``: run i's row was tested on the reference's budgets; otherwise its accuracies
    are shown but never marked beyond noise (the rows' scores rest on different curves)."""
    return Measure(name, grey, values, [None] + [_change(values[0], v) if same else "other budgets"
                                                 for v, same in zip(values[1:], same_grid[1:])])


def _budget_text(grey: float) -> str:
    return f"{grey:g}/255"


def compare_scorecards(documents: Sequence[dict[str, Any]]) -> list[ComparedRow]:
    """The rows of several scorecards (as JSON) matched by label, with their accuracies compared."""
    labels: dict[str, str] = {}
    for doc in documents:
        for row in doc["rows"]:
            labels.setdefault(row["label"], row["threat_model"])
    out = []
    for label, threat in labels.items():
        index = [next((k for k, r in enumerate(doc["rows"]) if r["label"] == label), None) for doc in documents]
        rows = [None if k is None else doc["rows"][k] for doc, k in zip(documents, index)]
        clean = [None if r is None else Accuracy(r["clean_accuracy"], _pair(r["clean_interval"]), r["n_images"],
                                                 pointer("rows", k, "clean_accuracy"))
                 for r, k in zip(rows, index)]
        same_grid = [r is None or rows[0] is None or _grid(r) == _grid(rows[0]) for r in rows]
        measures = [_measure("clean accuracy", None, clean, [True] * len(rows))]
        budgets = sorted({round(p["grey_levels"], 6) for r in rows if r for p in r["points"] if p["grey_levels"] > 0})
        for grey in budgets:
            values: list[Accuracy | None] = []
            for r, k in zip(rows, index):
                j = None if r is None else next((j for j, p in enumerate(r["points"])
                                                 if abs(p["grey_levels"] - grey) < 1e-6), None)
                if r is None or j is None:
                    values.append(None)
                    continue
                p = r["points"][j]
                values.append(Accuracy(p["accuracy"], _pair(p["interval"]), r["n_images"],
                                       pointer("rows", k, "points", j, "accuracy")))
            measures.append(_measure(f"accuracy at {_budget_text(grey)}", grey, values, same_grid))
        out.append(ComparedRow(label, threat, index, measures))
    return out


def _pair(interval: list[float] | None) -> tuple[float, float] | None:
    return None if not interval else (float(interval[0]), float(interval[1]))


def comparison(run_dirs: Sequence[str | Path]) -> Comparison:
    """The comparison of ``run_dirs`` (at least two), without writing anything."""
    if len(run_dirs) < 2:
        raise ValueError(f"compare needs at least two run directories, got {len(run_dirs)}")
    runs, documents = [], []
    for run_dir in run_dirs:
        document, from_metrics = read_run_scorecard(run_dir)
        documents.append(document)
        runs.append(ComparedRun(Path(run_dir), document["run"], Scorecard.model_validate(document), from_metrics))
    return Comparison(runs=runs, rows=compare_scorecards(documents), documents=documents)


# --- the page ---------------------------------------------------------------------------------

CSS = REPORT_CSS + """
td.beyond { background: #fff2cc; font-weight: 600; }
.mark { font-size: 0.75rem; font-weight: 700; color: #8a4b00; }
table.compare td, table.compare th { min-width: 9rem; }
table.compare td:first-child { min-width: 12rem; }
.mono { font-family: "DejaVu Sans Mono", monospace; font-size: 0.75rem; word-break: break-all; }
@page { size: A4 landscape; margin: 12mm; }
@media print { body { background: white; font-size: 8.5pt; } main { max-width: none; padding: 0; }
  h1 { font-size: 14pt; } h2 { font-size: 11pt; margin-top: 1rem; } h3 { font-size: 9.5pt; margin-top: 0.8rem; }
  table { font-size: 8pt; } ul.definitions, .small, .mark, .mono { font-size: 7pt; }
  tr, td, th { break-inside: avoid; page-break-inside: avoid; } h2, h3 { break-after: avoid; } }
"""


def _run_header(c: Comparison, f: Fields) -> str:
    heads = "".join(f"<th>{'reference: ' if i == 0 else ''}{escape(r.run_dir.name)}</th>" for i, r in enumerate(c.runs))
    lines = [("run", lambda i: f.span(f"run{i}", "/run", "text")),
             ("created", lambda i: f.span(f"run{i}", "/created", "text")),
             ("medrobust", lambda i: f.span(f"run{i}", "/medrobust_version", "text")),
             ("model file", lambda i: _maybe(f, f"run{i}", "/model/file", "text", "mono")),
             ("SHA-256", lambda i: _maybe(f, f"run{i}", "/model/sha256", "text", "mono")),
             ("overall robustness score", lambda i: f"<b>{f.span(f'run{i}', '/overall_text', 'text')}</b>"),
             ("scorecard", lambda i: "built from metrics.json (no scorecard.json)" if c.runs[i].from_metrics
              else "scorecard.json")]
    body = "".join(f"<tr><td><b>{escape(name)}</b></td>" + "".join(f"<td>{cell(i)}</td>" for i in range(len(c.runs)))
                   + "</tr>" for name, cell in lines)
    return f'<table class="compare"><thead><tr><th></th>{heads}</tr></thead><tbody>{body}</tbody></table>'


def _maybe(f: Fields, source: str, ptr: str, fmt: str, css: str = "") -> str:
    if f.has(source, ptr) and f.value(source, ptr) not in (None, ""):
        return f.span(source, ptr, fmt, css)
    return '<span class="na">not recorded</span>'


def _accuracy_cell(f: Fields, m: Measure, i: int, reference: str) -> str:
    value = m.values[i]
    if value is None:
        return f'<td class="na" data-run="{i}">{NOT_TESTED}</td>'
    interval_ptr = value.pointer.rsplit("/", 1)[0] + ("/clean_interval" if m.grey_levels is None else "/interval")
    text = (f'{f.span(f"run{i}", value.pointer, "pct")} <span class="small">'
            f'({f.span(f"run{i}", interval_ptr, "interval")})</span>')
    change = m.change[i]
    if change in ("higher", "lower"):
        arrow = "&#9650;" if change == "higher" else "&#9660;"
        return (f'<td class="beyond" data-run="{i}" data-change="{change}">{text}<br>'
                f'<span class="mark">{arrow} {change} than {escape(reference)}, beyond noise</span></td>')
    note = (f'<br><span class="small">{escape(change)}</span>' if change in ("within noise", "other budgets")
            else "")
    return f'<td data-run="{i}" data-change="{change or ""}">{text}{note}</td>'


def _text_cell(f: Fields, row: ComparedRow, i: int, key: str) -> str:
    k = row.index[i]
    if k is None:
        return f'<td class="na" data-run="{i}">{NOT_TESTED}</td>'
    return f'<td data-run="{i}">{f.span(f"run{i}", pointer("rows", k, key), "text")}</td>'


def _row_table(c: Comparison, f: Fields, row: ComparedRow) -> str:
    reference = c.runs[0].run_dir.name
    heads = "".join(f"<th>{escape(r.run_dir.name)}</th>" for r in c.runs)
    lines = []
    for m in row.measures:
        cells = "".join(_accuracy_cell(f, m, i, reference) for i in range(len(c.runs)))
        lines.append(f'<tr data-measure="{escape(m.name)}"><td><b>{escape(m.name)}</b></td>{cells}</tr>')
    for name, key in [("half-accuracy budget", "half_accuracy_text"), ("dangerous flips (main budget)",
                                                                        "dangerous_flips_text"), ("score", "score_text")]:
        cells = "".join(_text_cell(f, row, i, key) for i in range(len(c.runs)))
        lines.append(f'<tr data-measure="{escape(name)}"><td><b>{escape(name)}</b></td>{cells}</tr>')
    return (f'<h3>{escape(row.label)}</h3>\n<table class="compare" data-row="{escape(row.label)}"><thead><tr><th></th>'
            f"{heads}</tr></thead><tbody>" + "".join(lines) + "</tbody></table>")


def comparison_html(c: Comparison) -> str:
    f = Fields(**{f"run{i}": doc for i, doc in enumerate(c.documents)})
    differences = c.differences()
    setup = c.incomparable()
    summary = (f"<p><b>{len(differences)}</b> accurac{'y differs' if len(differences) == 1 else 'ies differ'} from the "
               "reference beyond noise.</p>" if differences else
               "<p>No accuracy differs from the reference beyond noise"
               + (" where the runs can be compared (see below).</p>" if setup else ".</p>"))
    if setup:
        summary += ('<div class="warning"><b>Not like for like:</b><ul>' + "".join(f"<li>{escape(s)}</li>" for s in setup)
                    + "</ul>Differences between these runs are not only the models'; a row tested at other budgets "
                    "is never marked beyond noise.</div>")
    not_tested = "".join(
        f"<li><b>{escape(r.run_dir.name)}</b>: " + ("; ".join(
            f.span(f"run{i}", pointer("not_tested", k), "text") for k in range(len(r.scorecard.not_tested)))
            or "nothing left out") + "</li>" for i, r in enumerate(c.runs))
    definitions = "".join(f"<li>{f.span('run0', pointer('definitions', k), 'text')}</li>"
                          for k in c.documents[0]["definitions"])
    body = "\n".join([
        "<h2>Runs</h2>", _run_header(c, f),
        "<h2>Threat models</h2>", f'<p class="rule"><b>Rule.</b> {escape(c.rule)}</p>', summary,
        *(_row_table(c, f, row) for row in c.rows),
        "<h2>Not tested</h2>", f"<ul>{not_tested}</ul>",
        "<h2>Definitions (of the reference run)</h2>", f'<ul class="definitions">{definitions}</ul>',
    ])
    title = "Robustness scorecards compared: " + ", ".join(r.run_dir.name for r in c.runs)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n")


def compare_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write the comparison of ``run_dirs`` to ``out`` (HTML); returns its path."""
    return write_comparison(comparison(run_dirs), out)


def write_comparison(c: Comparison, out: str | Path) -> Path:
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; give a file name such as {out / 'compare.html'}")
    c.html = atomic_write_text(out, comparison_html(c))
    return c.html
