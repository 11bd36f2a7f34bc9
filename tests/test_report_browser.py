"""The report in a real browser (slow tier): headless Chromium, driven by Playwright, opens report
pages of run folders and of a study folder; no console error, every image rendered with a non-zero
size, a screenshot saved. Needs `pip install playwright` and Debian's `chromium`."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "report_browser.py"


def test_reports_render_in_headless_chromium(tmp_path):
    # checked here, not when the module is collected: a run that deselects the slow tier sees no skip
    pytest.importorskip("playwright")
    pytest.importorskip("matplotlib")
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        pytest.skip("no chromium on the PATH (apt-get install chromium)")
    from sft_core.commands.report import write_report

    from test_report import classification_runs, write_run, write_study

    spec = importlib.util.spec_from_file_location("report_browser", SCRIPT)
    browser = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(browser)
    runs = classification_runs(tmp_path)
    ner = write_run(tmp_path / "ner", "ner", [{"f1": f, "f1_PER": f, "f1_LOC": f - 0.1} for f in (0.5, 0.6, 0.7)])
    pages = [Path(write_report([str(r) for r in runs], str(tmp_path / "compare.html"))),
             Path(write_report([str(ner)])), Path(write_report([str(write_study(tmp_path / "study"))]))]
    results = browser.check_pages(pages, tmp_path / "shots", height=None)
    for result in results:
        assert result["console_errors"] == [], result
        assert result["images"] >= 5 and result["rendered"] == result["images"], result
        assert result["smallest"] > 50, result
        shot = Path(result["screenshot"])
        assert shot.stat().st_size > 20_000 and shot.read_bytes()[:4] == b"\x89PNG"
