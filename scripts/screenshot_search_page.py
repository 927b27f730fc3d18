#!/usr/bin/env python3
"""Screenshot of the query service's search page showing real results, for the docs.

Serves ``--store`` (default ``demo_store``, what ``make demo`` builds from the sample corpus; built here the
same way when it is missing) on a local port, opens the page in headless Chromium (Debian ``chromium`` and
``chromium-driver``, see ``tests/browser.py``), types the query, presses Search, waits for every thumbnail
and saves the whole page as a PNG::

    .venv/bin/python scripts/screenshot_search_page.py            # -> docs/img/search_page.png
                                                                  #    and docs/img/search_page_preview.png
    .venv/bin/python scripts/screenshot_search_page.py --store ./store --query "a chart of revenue" --out x.png
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from mmrag_core.config import Settings
from mmrag_core.service import create_app
from mmrag_core.service.background import live_server
from tests.browser import chromium, missing_browser

DEFAULT_QUERY = "What was Northwind Roasters' total revenue in the third quarter of 2024?"


def ensure_demo_store(store: Path, corpus: Path) -> None:
    """Build ``store`` from the sample corpus (as ``make demo`` does) when it has no snapshot yet."""
    if (store / "LATEST").exists():
        return
    print(f"{store} has no snapshot: generating the sample corpus and indexing it (a few minutes)", file=sys.stderr)
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_corpus.py"), str(corpus)], check=True)
    subprocess.run([sys.executable, "-m", "flows.cli", "index", str(corpus), "--store", str(store)], check=True,
                   cwd=ROOT)


def screenshot(store: str, query: str, out: Path, k: int, width: int, preview_out: Path | None = None) -> int:
    """Search ``query`` on the page served from ``store`` and save the page to ``out`` (and, with
    ``preview_out``, the enlarged view of the top hit); returns the hit count."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    settings = Settings(store=store, service_poll_seconds=0, service_token=None)
    with live_server(create_app(settings)) as url, chromium(width, 800) as driver:
        driver.get(url + "/")
        driver.find_element(By.ID, "text").send_keys(query)
        k_box = driver.find_element(By.ID, "k")
        k_box.clear()
        k_box.send_keys(str(k))
        driver.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "status").text not in ("", "Searching..."))
        status = driver.find_element(By.ID, "status")
        if "error" in (status.get_attribute("class") or ""):
            raise SystemExit(f"the search failed: {status.text}")
        wait.until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('#results .hit img')].every(i => i.complete && i.src)"))
        hits = driver.execute_script("return document.querySelectorAll('#results .hit').length")
        # the whole page: the window grows by what the page overflows the viewport (the window's frame stays)
        for _ in range(3):
            overflow = driver.execute_script(
                "return document.documentElement.scrollHeight - window.innerHeight")
            if overflow <= 0:
                break
            driver.set_window_size(width, driver.get_window_size()["height"] + overflow + 16)
        out.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(out))
        if preview_out is not None:  # the top hit's thumbnail clicked: its page, larger, with its box
            driver.set_window_size(width, 1100)
            driver.find_element(By.CSS_SELECTOR, "#results .hit img").click()
            wait.until(lambda d: d.execute_script(
                "const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth > 0"))
            driver.save_screenshot(str(preview_out))
    return hits


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=str(ROOT / "demo_store"),
                    help="store to serve (default: demo_store, built from the sample corpus when missing)")
    ap.add_argument("--corpus", default=str(ROOT / "sample_corpus"),
                    help="where the sample corpus is generated when demo_store must be built")
    ap.add_argument("--query", default=DEFAULT_QUERY)
    ap.add_argument("-k", type=int, default=8)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "search_page.png")
    ap.add_argument("--preview-out", type=Path, default=ROOT / "docs" / "img" / "search_page_preview.png",
                    help="the enlarged view of the top hit ('' to skip)")
    args = ap.parse_args(argv)
    why = missing_browser()
    if why:
        print(f"cannot take the screenshot: {why}", file=sys.stderr)
        return 2
    if args.store == ap.get_default("store"):
        ensure_demo_store(Path(args.store), Path(args.corpus))
    hits = screenshot(args.store, args.query, args.out, args.k, args.width,
                      args.preview_out if str(args.preview_out) not in ("", ".") else None)
    print(f"{args.out}: the search page with {hits} hits for {args.query!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
