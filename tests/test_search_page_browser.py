"""The search page at ``/`` in a real headless Chromium, used as a person would: type a query (or choose an
image), press Search, and see a grid of results with thumbnails, source, page and snippet; errors are shown.

Needs Debian ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped without them unless
``MMRAG_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where their absence fails the test."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmrag_core.config import Settings
from mmrag_core.service import create_app
from tests.browser import chromium, missing_browser
from tests.live_server import live_server
from tests.query_corpus import SENTENCES, offline_query_corpus

TOKEN = "page-token-456"
WAIT_S = 60


@pytest.fixture(scope="module")
def browser() -> Iterator:
    why = missing_browser()
    if why:
        if os.environ.get("MMRAG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"headless browser required (MMRAG_REQUIRE_BROWSER=1): {why}")
        pytest.skip(why)
    with chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def service(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    base = tmp_path_factory.mktemp("search_page")
    with offline_query_corpus(base, files=True) as corpus:
        settings = Settings(store=corpus["store"].uri, service_token=TOKEN, service_poll_seconds=0,
                            service_max_k=20)
        with live_server(create_app(settings)) as url:
            yield {"url": url, "browser": browser, "base": base, **corpus}


def _search(driver, text: str = "", image: Path | None = None, k: int | None = None) -> None:
    """Fill the form as a user would and press the Search button."""
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "text")
    box.clear()
    if text:
        box.send_keys(text)
    if image is not None:
        driver.find_element(By.ID, "image").send_keys(str(image))
    if k is not None:
        k_box = driver.find_element(By.ID, "k")
        k_box.clear()
        k_box.send_keys(str(k))
    driver.find_element(By.CSS_SELECTOR, "#search button[type=submit]").click()
    _wait(driver, lambda d: d.find_element(By.ID, "status").text not in ("", "Searching..."))


def _wait(driver, condition) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT_S).until(condition)


def _cards(driver) -> list[dict]:
    """What the result grid shows, once every thumbnail has finished loading (or failed)."""
    _wait(driver, lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results .hit img')].every(i => i.complete && i.src)"))
    return driver.execute_script("""
        return [...document.querySelectorAll('#results .hit')].map(c => ({
          source: c.querySelector('.source').textContent, title: c.querySelector('.source').title,
          meta: c.querySelector('.meta').textContent, snippet: c.querySelector('.snippet').textContent,
          img_src: c.querySelector('img').src, img_w: c.querySelector('img').naturalWidth,
          img_h: c.querySelector('img').naturalHeight, visible: c.getBoundingClientRect().width > 0}));""")


def _status(driver) -> tuple[str, bool]:
    from selenium.webdriver.common.by import By

    status = driver.find_element(By.ID, "status")
    return status.text, "error" in (status.get_attribute("class") or "").split()


def test_text_search_shows_a_grid_of_results(service: dict) -> None:
    """Without the token the page says why nothing came back; with it, a text query shows the hits."""
    from selenium.webdriver.common.by import By

    driver = service["browser"]
    driver.get(service["url"] + "/")
    assert driver.title == "mmrag search"
    driver.execute_script("localStorage.clear()")
    driver.refresh()

    _search(driver, "How do plants turn light into sugar?")
    text, is_error = _status(driver)
    assert is_error and text.startswith("Error 401") and "bearer token" in text
    assert _cards_now(driver) == 0

    driver.find_element(By.CSS_SELECTOR, "details summary").click()
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    _search(driver, "How do plants turn light into sugar?", k=5)
    text, is_error = _status(driver)
    snapshot = service["store"].latest_id()
    assert not is_error and f"from snapshot {snapshot}" in text, text
    cards = _cards(driver)
    assert 1 <= len(cards) <= 5 and text.startswith(f"{len(cards)} hits")
    top = cards[0]
    _sha, uri, _items, _ = service["docs"][0]
    assert top["source"] == "report.pdf" and top["title"] == uri
    assert top["meta"].startswith("chunk, page 2")  # the page shows pages 1-based; the API's page is 1
    assert top["snippet"] == SENTENCES[1]
    for card in cards:  # every thumbnail arrived (fetched with the token) and is displayed
        assert card["visible"] and card["img_src"].startswith("blob:") and card["img_w"] > 0
    assert top["img_h"] > top["img_w"]  # a portrait PDF page with the chunk's box marked
    assert driver.execute_script("return getComputedStyle(document.getElementById('results')).display") == "grid"
    assert driver.execute_script("return localStorage.getItem('mmrag-token')") == TOKEN  # kept for next time


def test_image_search_finds_the_image(service: dict) -> None:
    """Choosing an image file (and no text) searches the image space with it (tiny CLIP): its own image first."""
    driver = service["browser"]
    driver.get(service["url"] + "/")  # the token is remembered from the previous test
    query = service["base"] / "query.png"
    query.write_bytes(service["pngs"][2])
    _search(driver, image=query, k=3)
    text, is_error = _status(driver)
    cards = _cards(driver)
    assert not is_error and 1 <= len(cards) <= 3 and text.startswith(f"{len(cards)} hits"), text
    assert cards[0]["source"] == "album.png" and cards[0]["meta"].startswith("image, page 1")
    assert (cards[0]["img_w"], cards[0]["img_h"]) == (64, 40)  # the stored image itself, not a placeholder

    _clear_image(driver)
    _search(driver, "espresso coffee", k=3)
    assert _status(driver)[0].endswith("(pages shown 1-based)")
    assert _cards(driver)[0]["snippet"] == SENTENCES[5]  # a text-only search again once the image is cleared


def test_errors_are_shown(service: dict) -> None:
    driver = service["browser"]
    driver.get(service["url"] + "/")
    _search(driver, "")
    assert _status(driver) == ("Type some text or choose an image.", True)
    _search(driver, "storm bridge", k=500)
    text, is_error = _status(driver)
    assert is_error and text.startswith("Error 422") and "service_max_k" in text
    assert _cards_now(driver) == 0


def _cards_now(driver) -> int:
    return driver.execute_script("return document.querySelectorAll('#results .hit').length")


def _clear_image(driver) -> None:
    from selenium.webdriver.common.by import By

    button = driver.find_element(By.ID, "clear-image")
    assert button.is_displayed()  # shown while an image is chosen
    button.click()
    assert driver.execute_script("return document.getElementById('image').files.length") == 0
    assert not button.is_displayed()
