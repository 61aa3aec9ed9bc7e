"""Numbers on the printed pages (the scorecard, statement.html, compare.html), each read from
the JSON it belongs to and tagged with where it came from.

A :class:`Fields` holds the JSON documents of a run (``scorecard`` = scorecard.json, ``metrics``
= metrics.json, as parsed). ``fields.span("scorecard", "/rows/0/clean_accuracy", "pct")`` looks
the value up by its JSON Pointer (RFC 6901) and writes it as
``<span data-source="scorecard" data-field="/rows/0/clean_accuracy" data-format="pct">78.3%</span>``,
so the page can only show what the file says, and a test can check every number by reading the
attributes back (:data:`FORMATS` is the one place a value becomes text).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape
from typing import Any

from medrobust.report.run_contents import format_eps


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _interval(v: Any) -> str:
    return "n/a" if not v else f"{100 * v[0]:.1f}–{100 * v[1]:.1f}%"


def _budget(v: Any) -> str:
    return f"{v:g}/255"


FORMATS: dict[str, Callable[[Any], str]] = {
    "pct": _pct,  # a fraction as a percentage with one decimal
    "interval": _interval,  # [low, high] fractions as "66.4–86.9%"
    "text": lambda v: "n/a" if v is None else str(v),
    "int": lambda v: "n/a" if v is None else str(int(v)),
    "budget": _budget,  # grey levels as "8/255"
    "grey": lambda v: "n/a" if v is None else f"{v:.2f}",  # grey levels (a float) with two decimals
    "hu": lambda v: "n/a" if v is None else f"{float(v):g} HU",  # a CT budget or noise in HU as "4 HU"
    "eps": lambda v: format_eps(float(v)),  # a budget in [0, 1] image units as "8/255"
    "eps_hu": lambda v: format_eps(float(v), "HU"),  # a CT budget in [0, 1] image units as "4 HU"
    "pp": lambda v: f"{v:+.1f} pp",  # percentage points with a sign
    "list": lambda v: ", ".join(str(x) for x in v) if v else "n/a",
    "size": lambda v: " x ".join(str(x) for x in v) if v else "any",
    "count": lambda v: str(len(v)),  # a list by its length ("3" files skipped)
    "status": lambda v: str(v).replace("_", " "),  # an evidence status: "not_addressed" as "not addressed"
}
"""Format name -> how a JSON value is written on the page."""


def escape_pointer_token(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def pointer(*tokens: str | int) -> str:
    """The JSON Pointer of ``tokens`` (``pointer("rows", 0, "score")`` -> ``/rows/0/score``)."""
    return "".join("/" + escape_pointer_token(t) for t in tokens)


def resolve(document: Any, json_pointer: str) -> Any:
    """The value at ``json_pointer`` in a parsed JSON document (``KeyError`` when absent)."""
    node = document
    if json_pointer == "":
        return node
    for raw in json_pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(token)]
        elif isinstance(node, Mapping):
            node = node[token]
        else:
            raise KeyError(json_pointer)
    return node


class Fields:
    """The run's JSON documents, by source name; writes tagged values (see the module docstring)."""

    def __init__(self, **documents: Any) -> None:
        self.documents = documents

    def value(self, source: str, json_pointer: str) -> Any:
        return resolve(self.documents[source], json_pointer)

    def has(self, source: str, json_pointer: str) -> bool:
        try:
            self.value(source, json_pointer)
        except (KeyError, IndexError, ValueError):
            return False
        return True

    def text(self, source: str, json_pointer: str, fmt: str) -> str:
        return FORMATS[fmt](self.value(source, json_pointer))

    def span(self, source: str, json_pointer: str, fmt: str, css_class: str = "") -> str:
        """The value as a tagged ``<span>`` (escaped)."""
        cls = f' class="{css_class}"' if css_class else ""
        return (f'<span data-source="{escape(source)}" data-field="{escape(json_pointer)}" data-format="{fmt}"{cls}>'
                f"{escape(self.text(source, json_pointer, fmt))}</span>")
