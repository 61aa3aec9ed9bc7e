"""The scorecard (``RUN/scorecard.json``) as HTML: one table row per threat model, the overall
headline, the definitions and what was not tested. Shared by report.html and statement.html;
every number is a tagged field of scorecard.json (:mod:`medrobust.report.fields`).
"""

from __future__ import annotations

from html import escape
from typing import Any

from medrobust.report.fields import Fields, pointer

SC = "scorecard"
NOT_AT_BUDGET = "not tested at this budget"
CERTIFIED_ANCHOR = "certified-entry"
"""The certificate's element id (the traceability table links to it)."""


def row_anchor(i: int) -> str:
    """The element id of the scorecard table's row ``i`` (the traceability table links to it)."""
    return f"row-{i}"


def budget_columns(scorecard: dict[str, Any]) -> list[tuple[float, str]]:
    """The tested budgets of all rows (grey levels above 0, ascending), each with the pointer of
    the first point that has it (its header is that point's ``grey_levels``)."""
    seen: dict[float, str] = {}
    for i, row in enumerate(scorecard["rows"]):
        for j, p in enumerate(row["points"]):
            g = p["grey_levels"]
            if g > 0 and not any(abs(g - s) < 1e-6 for s in seen):
                seen[g] = pointer("rows", i, "points", j, "grey_levels")
    return sorted(seen.items())


def budget_header(f: Fields, grey_levels_pointer: str) -> str:
    """A budget column's header in the data's unit: ``8/255``, or for CT the point's ``value`` in HU."""
    sc = f.documents[SC]
    if ((sc.get("data") or {}).get("grid") or {}).get("unit") == "HU":
        return f.span(SC, grey_levels_pointer.rsplit("/", 1)[0] + "/value", "hu")
    return f.span(SC, grey_levels_pointer, "budget")


def point_index(row: dict[str, Any], grey_levels: float) -> int | None:
    for j, p in enumerate(row["points"]):
        if abs(p["grey_levels"] - grey_levels) < 1e-6:
            return j
    return None


def _detection(f: Fields, i: int, row: dict[str, Any]) -> str:
    if not row["detection"]:
        return '<span class="na">none run on this threat</span>'
    lines = []
    for k, rate in enumerate(row["detection"]):
        p = pointer("rows", i, "detection", k)
        line = (f"{f.span(SC, p + '/detector', 'text')} {f.span(SC, p + '/detection_rate', 'pct')} "
                f'<span class="small">at {f.span(SC, p + "/false_alarm_rate", "pct")} false alarms')
        if "false_alarms_on" in rate:  # scorecards written before the worst benign change was shown lack it
            line += f' ({f.span(SC, p + "/false_alarms_on", "text")})'
        line += "</span>"
        if rate.get("note"):
            line += f'<br><span class="warning">{f.span(SC, p + "/note", "text")}</span>'
        lines.append(line)
    return "<br>".join(lines)


def scorecard_table(f: Fields) -> str:
    """The table: a row per threat model (label, images, clean accuracy with its interval, accuracy
    at each budget, half-accuracy budget, dangerous flips, detection, score)."""
    sc = f.documents[SC]
    columns = budget_columns(sc)
    eps_kind = "eps_hu" if ((sc.get("data") or {}).get("grid") or {}).get("unit") == "HU" else "eps"  # CT: "4 HU"
    head = ["threat model", "clean accuracy (95% CI)",
            *(f"at {budget_header(f, ptr)}" for _, ptr in columns),
            "half-accuracy budget", "dangerous flips (finding &rarr; normal)", "detection rate at false-alarm rate",
            "score (0&ndash;100)"]
    rows = []
    for i, row in enumerate(sc["rows"]):
        r = pointer("rows", i)
        cells = [f'<b>{f.span(SC, r + "/label", "text")}</b><br><span class="small">'
                 f'{f.span(SC, r + "/n_images", "int")} images</span>',
                 f'{f.span(SC, r + "/clean_accuracy", "pct", "acc")}<br>'
                 f'<span class="small">{f.span(SC, r + "/clean_interval", "interval")}</span>']
        for grey, _ in columns:
            j = point_index(row, grey)
            if j is None:
                cells.append(f'<span class="na" title="{NOT_AT_BUDGET}">&mdash;</span>')
                continue
            p = pointer("rows", i, "points", j)
            cells.append(f'{f.span(SC, p + "/accuracy", "pct", "acc")}<br>'
                         f'<span class="small">{f.span(SC, p + "/interval", "interval")}</span>')
        cells += [f.span(SC, r + "/half_accuracy_text", "text"),
                  f'{f.span(SC, r + "/dangerous_flips_text", "text")}<br>'
                  f'<span class="small">at {f.span(SC, r + "/main_eps", eps_kind)}</span>',
                  _detection(f, i, row), f'<b>{f.span(SC, r + "/score_text", "text")}</b>']
        if row.get("clean_abstention_rate") is not None:  # a guarded row: the guard's cost beside its accuracy
            cells[1] += (f'<br><span class="small">clean abstention '
                         f'{f.span(SC, r + "/clean_abstention_rate", "pct")}</span>')
        if row.get("warning"):
            cells[1] += f'<br><span class="warning">{f.span(SC, r + "/warning", "text")}</span>'
        rows.append(f'<tr id="{row_anchor(i)}" data-row="{escape(row["label"])}">'
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        rows.append(f'<tr><td colspan="{len(head)}"><span class="na">no threat model was tested</span></td></tr>')
    legend = (f'<p class="small">&mdash;: {NOT_AT_BUDGET}. Accuracy at a budget: the lowest any attack of the threat '
              "model reached at that budget or below; under it, its 95% interval.</p>")
    return ('<table class="scorecard"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>\n" + legend)


def certified_html(f: Fields) -> str:
    """The certificate (scorecard.json ``certified``), apart from the empirical table: certified
    accuracy at each radius (also in grey levels per pixel), what it holds for, the smoothed and
    base clean accuracies; empty when the run computed none."""
    entry = f.documents[SC].get("certified")
    if not entry:
        return ""
    cells = []
    for j in range(len(entry["points"])):
        p = pointer("certified", "points", j)
        cells.append(f'<td>{f.span(SC, p + "/radius", "text")}<br><span class="small">'
                     f'{f.span(SC, p + "/grey_levels_per_pixel", "grey")} grey levels/pixel</span></td>'
                     f'<td>{f.span(SC, p + "/accuracy", "pct", "acc")}<br><span class="small">'
                     f'{f.span(SC, p + "/interval", "interval")}</span></td>')
    c = "/certified"
    rows = "\n".join(f"<tr>{cell}</tr>" for cell in cells)
    note_html = (f'<p class="small warning">{f.span(SC, c + "/note", "text")}</p>' if entry.get("note") else "")
    reach_html = (f'<p class="small">With these draws no image can be certified beyond an L2 radius of '
                  f'{f.span(SC, c + "/largest_radius", "grey")}: certified accuracy at a larger radius is zero by the '
                  'number of draws, not a finding about the model.</p>' if entry.get("largest_radius") is not None else "")
    return (f'<div class="certified" id="{CERTIFIED_ANCHOR}" data-row="{escape(entry["label"])}">'
            f'<p><b>{f.span(SC, c + "/label", "text")}</b>: '
            f'noise sigma {f.span(SC, c + "/sigma", "text")}, {f.span(SC, c + "/n0", "int")} selection and '
            f'{f.span(SC, c + "/draws", "int")} estimation draws per image, alpha {f.span(SC, c + "/alpha", "text")}, on '
            f'{f.span(SC, c + "/n_images", "int")} images. A guarantee, not an empirical score, kept out of the '
            f'overall score; it holds for {f.span(SC, c + "/holds_for", "text")}.</p>\n'
            '<table class="scorecard certified"><thead><tr><th>L2 radius ([0, 1] image units)</th>'
            "<th>certified accuracy (95% CI)</th></tr></thead>\n<tbody>\n" + rows + "\n</tbody></table>\n"
            f'<p class="small">Smoothed classifier, clean: {f.span(SC, c + "/smoothed_clean_accuracy", "pct")}; base '
            f'model, clean: {f.span(SC, c + "/base_clean_accuracy", "pct")}; no certificate (CERTIFY abstains) for '
            f'{f.span(SC, c + "/abstention_rate", "pct")} of the images.</p>{reach_html}{note_html}'
            f'<p class="small definition">{f.span(SC, "/definitions/certified", "text")}</p></div>')


def overall_html(f: Fields) -> str:
    """The overall headline with its definition beside it."""
    return (f'<p class="overall"><span class="overall-label">Overall robustness score:</span> '
            f'<span class="overall-value">{f.span(SC, "/overall_text", "text")}</span> '
            f'<span class="definition">{f.span(SC, "/definitions/overall", "text")}</span></p>')


def not_tested_html(f: Fields) -> str:
    items = f.documents[SC]["not_tested"]
    if not items:
        return '<p class="not-tested">Not tested: nothing among the threat models medrobust knows was left out.</p>'
    lis = "".join(f"<li>{f.span(SC, pointer('not_tested', k), 'text')}</li>" for k in range(len(items)))
    return f'<div class="not-tested"><b>Not tested:</b><ul>{lis}</ul></div>'


def definitions_html(f: Fields, keys: list[str] | None = None) -> str:
    definitions = f.documents[SC]["definitions"]
    keys = [k for k in (keys or list(definitions)) if k in definitions]
    items = "".join(f"<li>{f.span(SC, pointer('definitions', k), 'text')}</li>" for k in keys)
    return f'<ul class="definitions">{items}</ul>'


def scorecard_section(f: Fields) -> str:
    """The report's first section: overall headline, table, what was not tested, definitions."""
    return "\n".join([overall_html(f), scorecard_table(f), certified_html(f), not_tested_html(f),
                      '<h3>Definitions</h3>', definitions_html(f),
                      '<p class="note">The same scorecard is in scorecard.json, and as a printable one-page robustness '
                      "statement in statement.html, in the run folder.</p>"])
