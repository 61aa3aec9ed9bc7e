"""One report figure: its stable id, title, caption and PNG bytes, and how a matplotlib figure
becomes those bytes.

Figures are drawn on :class:`matplotlib.figure.Figure` objects directly (no pyplot, no global
backend state), so building a report never opens a window and never touches other code's
plots; saving a bare ``Figure`` to PNG uses the Agg renderer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 110
"""Resolution of every PNG (pixels per inch of figure size)."""

COLORS = ("#3b6ea8", "#d1495b", "#edae49", "#00798c", "#66a182", "#8d6a9f", "#2e4057", "#c17c74")
"""The report's categorical palette (readable in print and for common colour blindness)."""


@dataclass(frozen=True)
class ReportFigure:
    """A rendered figure: ``id`` names its file (``figures/<id>.png``) and its HTML anchor."""

    id: str
    title: str
    caption: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{self.id}.png"


def new_figure(width: float, height: float) -> Figure:
    """A figure of ``width`` x ``height`` inches with a constrained layout."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def render_png(fig: Figure) -> bytes:
    """The figure as PNG bytes, with no software/version stamp, so reruns give equal files."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def finish(fig: Figure, figure_id: str, title: str, caption: str) -> ReportFigure:
    """Render ``fig`` and wrap it with its id, title and caption."""
    return ReportFigure(id=figure_id, title=title, caption=caption, png=render_png(fig))


def percent_axis(ax: Axes, axis: str = "y", top: float = 100.0) -> None:
    """Label an axis that shows percentages from 0 to ``top``."""
    if axis == "y":
        ax.set_ylim(0, top)
        ax.yaxis.grid(True, alpha=0.3)
    else:
        ax.set_xlim(0, top)
        ax.xaxis.grid(True, alpha=0.3)
    ax.set_axisbelow(True)


def label_bars(ax: Axes, bars: object, fmt: str = "{:.0f}", fontsize: float = 7.0) -> None:
    """Write each bar's value just above (or, if negative, below) it."""
    for bar in bars:  # type: ignore[attr-defined]
        height = bar.get_height()
        if height != height:  # NaN: nothing drawn
            continue
        va = "bottom" if height >= 0 else "top"
        ax.annotate(fmt.format(height), (bar.get_x() + bar.get_width() / 2, height), ha="center", va=va,
                    fontsize=fontsize, xytext=(0, 2 if height >= 0 else -2), textcoords="offset points")


def grouped_bars(ax: Axes, groups: list[str], series: dict[str, list[float]], fmt: str = "{:.0f}") -> None:
    """Bars for several series side by side over the same groups, labelled with their values."""
    n = max(len(series), 1)
    width = 0.8 / n
    for i, (name, values) in enumerate(series.items()):
        positions = [g + (i - (n - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(positions, values, width=width * 0.95, label=name, color=COLORS[i % len(COLORS)])
        label_bars(ax, bars, fmt, fontsize=6.5 if n > 3 else 7.0)
    ax.set_xticks(range(len(groups)), groups)
