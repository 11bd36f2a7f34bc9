"""The report's figures, drawn with matplotlib's object API (no pyplot, no global backend: a
report written from a notebook leaves its plotting alone), each returned as PNG bytes."""

from __future__ import annotations

import io
import math
from typing import Sequence

from ...errors import SFTError

Series = tuple[str, Sequence[float], Sequence[float]]  # (label, x values, y values)


def _figure(width: float = 5.2, height: float = 3.3):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise SFTError("sft report needs matplotlib: pip install 'sft-core[report]'") from None
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def lines(series: list[Series], title: str, xlabel: str, ylabel: str, log_y: bool = False,
          markers: bool = False) -> bytes:
    """One line per series (several runs overlaid), legend when there is more than one."""
    figure = _figure()
    ax = figure.add_subplot()
    for label, xs, ys in series:
        points = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and math.isfinite(y)]
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label,
                marker="o" if markers or len(points) < 12 else None, markersize=4, linewidth=1.5)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if log_y:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(figure)


def confusion(labels: list[str], counts: list[list[int]], title: str) -> bytes:
    """Rows: gold labels; columns: predicted; each cell its count and the share of its row."""
    size = max(3.6, 0.6 * len(labels) + 2.2)
    figure = _figure(size + 0.8, size)
    ax = figure.add_subplot()
    totals = [sum(row) or 1 for row in counts]
    shares = [[c / totals[i] for c in row] for i, row in enumerate(counts)]
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels=labels, rotation=45 if len(labels) > 4 else 0, ha="right"
                  if len(labels) > 4 else "center")
    ax.set_yticks(range(len(labels)), labels=labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    if len(labels) <= 20:
        for i, row in enumerate(counts):
            for j, count in enumerate(row):
                ax.text(j, i, f"{count}\n{shares[i][j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if shares[i][j] > 0.5 else "black")
    figure.colorbar(image, ax=ax, fraction=0.046, label="share of the gold label's examples")
    return _png(figure)


def bars(categories: list[str], series: list[tuple[str, list[float]]], title: str, ylabel: str,
         horizontal: bool = False) -> bytes:
    """Grouped bars: one group per category, one bar per series (run)."""
    n = max(len(series), 1)
    figure = _figure(min(10.5, max(5.2, 0.5 * len(categories) * n + 2)), 3.3) if not horizontal else \
        _figure(5.2, max(2.4, 0.35 * len(categories) + 1.2))
    ax = figure.add_subplot()
    width = 0.8 / n
    for k, (label, values) in enumerate(series):
        offsets = [i - 0.4 + width * (k + 0.5) for i in range(len(categories))]
        if horizontal:
            ax.barh(offsets, values, height=width, label=label)
        else:
            ax.bar(offsets, values, width=width, label=label)
    if horizontal:
        ax.set_yticks(range(len(categories)), labels=categories)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel)
    else:
        ax.set_xticks(range(len(categories)), labels=categories)
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, axis="x" if horizontal else "y", alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    return _png(figure)


def trial_history(numbers: list[int], values: list[float | None], states: list[str], maximize: bool,
                  metric: str) -> bytes:
    """Each trial's score (pruned trials at their last reported score), and the best so far."""
    figure = _figure()
    ax = figure.add_subplot()
    styles = {"complete": ("o", "tab:blue"), "pruned": ("x", "tab:orange"), "fail": ("s", "tab:red")}
    for state, (marker, color) in styles.items():
        points = [(n, v) for n, v, s in zip(numbers, values, states) if s == state and v is not None]
        if points:
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, color=color, label=state, zorder=3)
    failed = [n for n, v, s in zip(numbers, values, states) if s == "fail" and v is None]
    for n in failed:
        ax.axvline(n, color="tab:red", alpha=0.3, linestyle=":")
    best, xs, ys = None, [], []
    for n, v, s in zip(numbers, values, states):
        if s == "complete" and v is not None:
            best = v if best is None else (max(best, v) if maximize else min(best, v))
        if best is not None:
            xs.append(n)
            ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:green", label="best so far")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{metric} (validation split)")
    ax.set_title("Trial history" + (f" ({len(failed)} failed)" if failed else ""))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _png(figure)


def parameter_scatter(name: str, xs: list, ys: list[float], log_x: bool, metric: str) -> bytes:
    """A parameter's values against the trials' scores (choices of strings on a category axis)."""
    figure = _figure(4.2, 3.0)
    ax = figure.add_subplot()
    if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
        ax.scatter(xs, ys, color="tab:blue")
        if log_x:
            ax.set_xscale("log")
    else:
        categories = sorted({str(x) for x in xs})
        ax.scatter([categories.index(str(x)) for x in xs], ys, color="tab:blue")
        ax.set_xticks(range(len(categories)), labels=categories)
    ax.set_xlabel(name)
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    return _png(figure)
