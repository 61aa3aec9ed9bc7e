"""The page around the report's content: inline CSS, sections, embedded figures, the footer.

The page is self-contained: no external stylesheet, font, script or image; every figure is
an ``<img>`` with a ``data:image/png;base64,`` URI, so the file opens offline and can be mailed
or archived as one document."""

from __future__ import annotations

import base64
from html import escape

from medrobust.report.figure import ReportFigure

CSS = """
:root { --ink: #1d2733; --muted: #5b6675; --rule: #d5dbe3; --accent: #3b6ea8; --warn: #b2182b; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink); margin: 0;
       line-height: 1.45; background: #f6f8fa; }
main { max-width: 1100px; margin: 0 auto; padding: 1.5rem 2rem 3rem; background: white; }
h1 { font-size: 1.7rem; margin: 0.2rem 0 0.3rem; }
h2 { font-size: 1.3rem; border-bottom: 2px solid var(--rule); padding-bottom: 0.2rem; margin-top: 2.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
nav { font-size: 0.9rem; margin: 0.6rem 0 1rem; }
nav a { margin-right: 0.9rem; color: var(--accent); text-decoration: none; }
.subtitle { color: var(--muted); margin: 0; }
.score { display: flex; flex-wrap: wrap; align-items: baseline; gap: 0.6rem; background: #eef3f9;
         border-left: 5px solid var(--accent); padding: 0.8rem 1rem; margin: 1rem 0; }
.score-value { font-size: 2.2rem; font-weight: 700; color: var(--accent); }
.score-max { color: var(--muted); }
.score-text { flex: 1 1 400px; font-size: 0.92rem; }
ul.summary li { margin: 0.35rem 0; }
table { border-collapse: collapse; margin: 0.6rem 0 1rem; font-size: 0.86rem; }
th, td { border: 1px solid var(--rule); padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #eef1f5; }
table.wide { display: block; overflow-x: auto; max-width: 100%; }
table.kv td:first-child { font-weight: 600; white-space: nowrap; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { font-size: 0.88rem; color: var(--muted); max-width: 900px; }
figcaption b { color: var(--ink); }
.note { color: var(--muted); font-style: italic; }
.overall { background: #eef3f9; border-left: 5px solid var(--accent); padding: 0.6rem 1rem; margin: 1rem 0; }
.overall-label { font-weight: 700; }
.overall-value { font-size: 1.5rem; font-weight: 700; color: var(--accent); margin: 0 0.5rem; }
.definition, ul.definitions { color: var(--muted); font-size: 0.86rem; }
table.scorecard td { white-space: normal; }
.small { font-size: 0.78rem; color: var(--muted); }
.na { color: var(--muted); font-style: italic; }
.warning { color: var(--warn); font-weight: 600; font-size: 0.86rem; }
.not-tested ul { margin: 0.2rem 0 0.8rem; }
pre { background: #f3f5f8; border: 1px solid var(--rule); padding: 0.7rem; overflow-x: auto; font-size: 0.8rem; }
footer { margin-top: 2.5rem; font-size: 0.8rem; color: var(--muted); border-top: 1px solid var(--rule);
         padding-top: 0.6rem; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def figure_html(fig: ReportFigure) -> str:
    return (f'<figure id="{escape(fig.id)}">\n<img src="{data_uri(fig.png)}" alt="{escape(fig.title)}">\n'
            f"<figcaption><b>{escape(fig.title)}.</b> {escape(fig.caption)}</figcaption>\n</figure>")


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{escape(section_id)}">\n<h2>{escape(title)}</h2>\n{body}\n</section>'


def document(title: str, subtitle: str, sections: list[tuple[str, str, str]], footer: str) -> str:
    """The whole page: ``sections`` are (id, title, body HTML)."""
    nav = "".join(f'<a href="#{escape(sid)}">{escape(stitle)}</a>' for sid, stitle, _ in sections)
    body = "\n".join(section(*s) for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{escape(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<main>\n<h1>{escape(title)}</h1>\n"
            f'<p class="subtitle">{escape(subtitle)}</p>\n<nav>{nav}</nav>\n{body}\n'
            f"<footer>{footer}</footer>\n</main>\n</body>\n</html>\n")
