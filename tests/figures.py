"""Figures the real-data tier measures, each asserted against its threshold and printed at the end.

A test asks for the ``figure`` fixture and calls ``figure("sst2 dev accuracy", 0.83, at_least=0.80)``:
the value is recorded, the assertion made, and the terminal summary prints every figure of the
session in one table (what CI shows). With SFT_FIGURES=FILE the table is also written there as JSON.
"""

from __future__ import annotations

import json
import os

import pytest

_FIGURES: list[dict] = []


@pytest.fixture
def figure(request):
    def record(name: str, value: float, *, at_least: float | None = None, at_most: float | None = None,
               note: str = "") -> float:
        entry = {"test": request.node.nodeid, "figure": name, "value": value, "at_least": at_least,
                 "at_most": at_most, "note": note}
        _FIGURES.append(entry)
        if at_least is not None:
            assert value >= at_least, f"{name}: {value} is below its threshold {at_least} ({note})"
        if at_most is not None:
            assert value <= at_most, f"{name}: {value} is above its threshold {at_most} ({note})"
        return value

    return record


def _bound(entry: dict) -> str:
    if entry["at_least"] is not None:
        return f">= {entry['at_least']:g}"
    if entry["at_most"] is not None:
        return f"<= {entry['at_most']:g}"
    return ""


def pytest_terminal_summary(terminalreporter):
    if not _FIGURES:
        return
    terminalreporter.section("figures of the real-data tier")
    width = max(len(f["figure"]) for f in _FIGURES)
    for entry in _FIGURES:
        value = entry["value"]
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        terminalreporter.write_line(f"{entry['figure']:<{width}}  {shown:>10}  {_bound(entry):<10}  {entry['note']}")
    path = os.environ.get("SFT_FIGURES")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump(_FIGURES, out, indent=2)
