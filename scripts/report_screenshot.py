"""Regenerate docs/report.png: the report of a real cassette, in Debian's headless Chromium.

.venv/bin/python scripts/report_screenshot.py [CASSETTE] [OUT.png]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

from proxy.core.cassette import load
from proxy.core.report import CHROMIUM_ARGS, render_html


def main() -> None:
    cassette = Path(sys.argv[1] if len(sys.argv) > 1 else "cassettes/command-approval.jsonl")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/report.png")
    with tempfile.TemporaryDirectory() as tmp:
        page_path = Path(tmp) / "report.html"
        page_path.write_text(render_html(load(cassette), cassette.name))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", args=list(CHROMIUM_ARGS)
            )
            page = browser.new_page(viewport={"width": 1400, "height": 820})
            page.goto(page_path.as_uri())
            page.wait_for_selector("body[data-ready=true]")
            page.locator(".row.server-request a.pair").first.click()
            page.screenshot(path=str(out))
            browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
