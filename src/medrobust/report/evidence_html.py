"""The requirements traced (``scorecard.json`` ``evidence``, :mod:`medrobust.evaluation.evidence`)
as an HTML table: requirement -> source and what it asks -> the evidence in this run (linked to
the rows and sections of the page — ``#row-N``, ``#certified-entry``, ``#scorecard``, ``#detection``,
which statement.html and report.html both have — values tagged) -> status -> what is not addressed, under the
disclaimer that it decides no compliance. Shared by statement.html and report.html; every value
is a tagged field of scorecard.json or metrics.json (:mod:`medrobust.report.fields`).
"""

from __future__ import annotations

from html import escape

from medrobust.evaluation.evidence import BENIGN, CLEAN, DETECTION, PER_CLASS, SKIPPED
from medrobust.report.fields import Fields, pointer
from medrobust.report.scorecard_html import CERTIFIED_ANCHOR, SC, row_anchor

M = "metrics"


def _link(anchor: str, html: str) -> str:
    return f'<a href="#{anchor}">{html}</a>'


def _names(f: Fields, source: str, items: str, key: str) -> str:
    """The names (``key``) of metrics.json's list ``items`` as tagged values, comma-separated."""
    return ", ".join(f.span(source, pointer(items, i, key), "text") for i in range(len(f.documents[source][items])))


def _clean(f: Fields) -> str:
    text = (f"{CLEAN} {f.span(M, '/baseline/accuracy', 'pct')} on {f.span(M, '/baseline/n', 'int')} test images")
    if f.documents[SC]["rows"]:
        text += (f"; {f.span(SC, '/rows/0/clean_accuracy', 'pct')} (95% CI {f.span(SC, '/rows/0/clean_interval', 'interval')}) "
                 f"on the {f.span(SC, '/rows/0/n_images', 'int')} attacked")
    return _link(row_anchor(0), text) if f.documents[SC]["rows"] else text


def _per_class(f: Fields) -> str:
    per_class = f.documents[M]["baseline"]["per_class"]
    return "sensitivity " + ", ".join(
        f"{escape(c)} {f.span(M, pointer('baseline', 'per_class', c, 'recall'), 'pct')}" for c in per_class)


def _item(f: Fields, name: str, labels: dict[str, int]) -> str:
    """One evidence name as the page shows it: a row's label linked to its row, the certificate
    linked to its section, or the named figures of metrics.json."""
    if name in labels:
        i = labels[name]
        return _link(row_anchor(i), f.span(SC, pointer("rows", i, "label"), "text"))
    certified = f.documents[SC].get("certified")
    if certified and name == certified["label"]:
        return _link(CERTIFIED_ANCHOR, f.span(SC, "/certified/label", "text"))
    if name == CLEAN:
        return _clean(f)
    if name == PER_CLASS:
        return _per_class(f)
    if name == DETECTION:
        return _link("scorecard", f"detection rates of {_names(f, M, 'detectors', 'name')}")
    if name == BENIGN:
        return _link("detection", f"false alarms of {_names(f, M, 'detectors', 'name')} on clean images and benign "
                                  "changes")
    if name == SKIPPED and f.has(M, "/data/skipped"):
        return f"{f.span(M, '/data/skipped', 'count')} unreadable files skipped, each listed in skipped.txt"
    return escape(name)  # a name this version does not know (a newer scorecard): shown as written


def evidence_table(f: Fields) -> str:
    """The disclaimer (the ``evidence`` definition) and the table; empty for a scorecard without
    evidence (schema 1)."""
    sc = f.documents[SC]
    if not sc.get("evidence"):
        return ""
    labels: dict[str, int] = {}
    for i, row in enumerate(sc["rows"]):
        labels.setdefault(row["label"], i)
    rows = []
    for i, entry in enumerate(sc["evidence"]):
        e = pointer("evidence", i)
        evidence = "<br>".join(_item(f, name, labels) for name in entry["rows"]) or '<span class="na">none</span>'
        gaps = "".join(f"<li>{f.span(SC, pointer('evidence', i, 'gaps', k), 'text')}</li>"
                       for k in range(len(entry["gaps"])))
        rows.append(f'<tr data-requirement="{escape(entry["requirement"])}">'
                    f'<td><b>{f.span(SC, e + "/requirement", "text")}</b></td>'
                    f'<td>{f.span(SC, e + "/source", "text")}<br><span class="small">{f.span(SC, e + "/summary", "text")}'
                    "</span></td>"
                    f"<td>{evidence}</td>"
                    f'<td class="status {escape(entry["status"])}">{f.span(SC, e + "/status", "status")}</td>'
                    f'<td>{f"<ul>{gaps}</ul>" if gaps else ""}</td></tr>')
    disclaimer = (f'<p class="disclaimer">{f.span(SC, "/definitions/evidence", "text")}</p>'
                  if f.has(SC, "/definitions/evidence") else "")
    return (f'{disclaimer}<table class="evidence"><thead><tr><th>requirement</th><th>source and what it asks</th>'
            "<th>evidence in this run</th><th>status</th><th>not addressed</th></tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table>\n")
