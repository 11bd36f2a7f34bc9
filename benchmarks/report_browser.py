"""Open report pages of `sft report` in headless Chromium: no console errors, every image rendered
with a non-zero size, a screenshot saved. Exits 1 when a page fails.

    pip install playwright          # the Python driver only: the browser is Debian's
    apt-get install chromium
    python benchmarks/report_browser.py runs/sst2/report.html runs/rte-tune/report.html --screenshots docs/images

Playwright drives the system Chromium (``--chromium``, default: ``chromium`` on the PATH), so no
browser is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def check_pages(pages: list[Path], screenshots: Path, chromium: str | None = None, width: int = 1200,
                height: int | None = 1600) -> list[dict]:
    """One result per page: {"page", "images", "smallest", "console_errors", "screenshot", "ok"}.
    ``height``: the screenshot's height in pixels (the top of the page); None: the whole page."""
    from playwright.sync_api import sync_playwright

    executable = chromium or shutil.which("chromium") or shutil.which("chromium-browser")
    if not executable:
        raise SystemExit("no Chromium found: apt-get install chromium, or give --chromium PATH")
    screenshots.mkdir(parents=True, exist_ok=True)
    results = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        for page_path in pages:
            page = browser.new_page(viewport={"width": width, "height": height or 900})
            errors: list[str] = []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
            page.on("requestfailed", lambda r, errors=errors: errors.append(f"request failed: {r.url}"))
            page.goto(page_path.resolve().as_uri(), wait_until="load")
            sizes = page.eval_on_selector_all(
                "img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight,"
                       " e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
            rendered = [s for s in sizes if s[0] and min(s[1:]) > 0]
            shot = screenshots / f"{page_path.parent.name or 'report'}-{page_path.stem}.png"
            page.screenshot(path=str(shot), full_page=height is None)
            page.close()
            results.append({"page": str(page_path), "images": len(sizes), "rendered": len(rendered),
                            "smallest": min((min(s[3], s[4]) for s in sizes), default=0),
                            "console_errors": errors, "screenshot": str(shot),
                            "ok": bool(sizes) and len(rendered) == len(sizes) and not errors})
        browser.close()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="+", type=Path)
    parser.add_argument("--screenshots", type=Path, default=Path("runs/report-screenshots"))
    parser.add_argument("--chromium", help="the Chromium executable (default: chromium on the PATH)")
    parser.add_argument("--height", type=int, default=1600, help="screenshot height in pixels; 0: the whole page")
    args = parser.parse_args(argv)
    results = check_pages(args.pages, args.screenshots, args.chromium, height=args.height or None)
    print(f"{'page':<48} {'images':>6} {'rendered':>8} {'smallest px':>11} {'console errors':>14}  screenshot")
    for r in results:
        print(f"{r['page']:<48} {r['images']:>6} {r['rendered']:>8} {r['smallest']:>11.0f} "
              f"{len(r['console_errors']):>14}  {r['screenshot']}")
        for error in r["console_errors"]:
            print(f"  console: {error}")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
