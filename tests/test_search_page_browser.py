"""The search page at ``/`` in a real headless Chromium, used as a person would: type a query (or choose an
image), press Search, and see a grid of results with thumbnails, source, page and snippet; errors are shown.
Ask a question in the Ask box and see the answer, its citations linking to the cited hits, and the quoted rows.

Needs Debian ``chromium`` and ``chromium-driver`` and the ``selenium`` package; skipped without them unless
``MMRAG_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where their absence fails the test."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mmrag_core.config import Settings
from mmrag_core.service import create_app
from tests.answer_fixtures import STATEMENT_PAGES, STATEMENT_ROW, publish_text_snapshot
from tests.browser import chromium, missing_browser
from tests.live_server import live_server
from tests.query_corpus import SENTENCES, offline_query_corpus
from tests.tiny_models import force_hf_offline

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
          meta: c.querySelector('.meta').textContent, ranks: c.querySelector('.ranks').textContent,
          snippet: c.querySelector('.snippet').textContent,
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
    assert top["meta"] == "chunk, p. 2"  # the page shows pages 1-based; the API's page is 1
    assert top["ranks"].startswith("text #1")  # the per-list ranks, not the fused score
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
    assert cards[0]["source"] == "album.png" and cards[0]["meta"] == "image, p. 1"
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


@pytest.fixture(scope="module")
def ask_service(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A service with the default (extractive) answerer over a snapshot holding a cash-flow statement page."""
    with pytest.MonkeyPatch.context() as mp:
        force_hf_offline(mp)
        store = publish_text_snapshot(tmp_path_factory.mktemp("ask_page"), STATEMENT_PAGES)
        with live_server(create_app(Settings(store=str(store), service_poll_seconds=0))) as url:
            yield url


def _ask(driver, question: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    driver.find_element(By.CSS_SELECTOR, "#ask button[type=submit]").click()
    _wait(driver, lambda d: d.find_element(By.ID, "status").text not in ("", "Answering..."))


def _answer(driver) -> dict:
    return driver.execute_script("""
        const box = document.getElementById('answer');
        return {hidden: box.hidden, text: document.getElementById('answer-text').textContent,
          citations: [...document.querySelectorAll('#answer-citations li')].map(li => ({
            link: li.querySelector('a').textContent, href: li.querySelector('a').getAttribute('href'),
            quotes: [...li.querySelectorAll('blockquote')].map(q => q.textContent)}))};""")


def test_ask_box_shows_a_cited_answer(ask_service: str, browser) -> None:
    """The Ask box answers extractively (the service's default): the answer, each citation as [n] file p. N
    linking to the cited hit's card below, and the quoted statement row; an unanswerable question names the
    closest sources instead."""
    from selenium.webdriver.common.by import By

    driver = browser
    driver.get(ask_service + "/")
    _ask(driver, "What is the FY2018 capital expenditure amount (in USD millions) for 3M?")
    text, is_error = _status(driver)
    assert not is_error and text.startswith("Answer (extractive) from snapshot"), text
    answer = _answer(driver)
    assert not answer["hidden"] and answer["text"].startswith("capex for FY2018: 1,577 USD millions [")
    (citation,) = answer["citations"]
    n = int(citation["href"].removeprefix("#source-"))
    assert citation["link"] == f"[{n}] 3M_2018_10K.pdf p. 60" and citation["quotes"] == [STATEMENT_ROW]
    cards = _cards(driver)
    cited = cards[n - 1]
    assert cited["source"] == "3M_2018_10K.pdf" and cited["meta"] == "chunk, p. 60" and cited["visible"]
    driver.find_element(By.CSS_SELECTOR, "#answer-citations a").click()
    assert driver.execute_script("return location.hash") == f"#source-{n}"
    assert driver.execute_script("return document.querySelector(':target').querySelector('.source').textContent") \
        == "3M_2018_10K.pdf"

    _ask(driver, "What was 3M's FY2018 inventory turnover ratio?")
    answer = _answer(driver)
    assert answer["text"].startswith("The sources do not state") and answer["citations"]
    assert all(c["link"].startswith("[") and not c["quotes"] for c in answer["citations"])
    _ask(driver, "")
    assert _status(driver) == ("Type a question.", True) and _answer(driver)["hidden"]


def _with_token(driver, url: str) -> None:
    driver.get(url + "/")
    driver.execute_script("localStorage.setItem('mmrag-token', arguments[0])", TOKEN)


def test_a_query_link_searches_and_filters_write_the_link(service: dict) -> None:
    """/?q=...&k=...&kind=... fills the form and searches; the filter controls narrow the hits and the address
    becomes the link to share; the empty page says what is served."""
    from urllib.parse import parse_qs, urlparse

    from selenium.webdriver.common.by import By

    driver, url = service["browser"], service["url"]
    _with_token(driver, url)
    driver.get(url + "/")
    snapshot = service["store"].latest_id()
    _wait(driver, lambda d: snapshot in d.find_element(By.ID, "info").text)
    info = driver.find_element(By.ID, "info").text
    assert f"store {service['store'].uri}" in info and "3 documents" in info and "published 20" in info, info
    assert driver.find_element(By.ID, "image").is_displayed()  # this snapshot has an image space

    driver.get(url + "/?q=espresso+coffee&k=4&kind=chunk")
    _wait(driver, lambda d: d.find_element(By.ID, "status").text not in ("", "Searching..."))
    assert driver.find_element(By.ID, "text").get_attribute("value") == "espresso coffee"
    assert driver.find_element(By.ID, "f-kind").get_attribute("value") == "chunk"
    cards = _cards(driver)
    assert 1 <= len(cards) <= 4 and all(c["meta"].startswith("chunk, p. ") for c in cards)
    assert cards[0]["snippet"] == SENTENCES[5]

    driver.find_element(By.ID, "f-kind").send_keys("any")
    driver.find_element(By.ID, "f-doc").send_keys("notes.pdf")
    driver.find_element(By.ID, "f-from").send_keys("2")
    driver.find_element(By.ID, "f-to").send_keys("3")
    _search(driver, "storm bridge", k=10)
    cards = _cards(driver)
    assert cards and all(c["source"] == "notes.pdf" and c["meta"] in ("chunk, p. 2", "chunk, p. 3") for c in cards)
    query = parse_qs(urlparse(driver.current_url).query)
    assert query == {"q": ["storm bridge"], "k": ["10"], "doc": ["notes.pdf"], "pages": ["2-3"]}, query
    driver.get(driver.current_url)  # the link, opened again: the same hits
    _wait(driver, lambda d: d.find_element(By.ID, "status").text not in ("", "Searching..."))
    assert [c["meta"] for c in _cards(driver)] == [c["meta"] for c in cards]


def test_a_thumbnail_opens_the_enlarged_page_with_its_box(service: dict) -> None:
    from selenium.webdriver.common.by import By

    driver, url = service["browser"], service["url"]
    _with_token(driver, url)
    driver.get(url + "/?q=vaccine+trial+volunteers&k=2")
    _wait(driver, lambda d: d.find_element(By.ID, "status").text not in ("", "Searching..."))
    cards = _cards(driver)
    driver.find_element(By.CSS_SELECTOR, "#results .hit img").click()
    _wait(driver, lambda d: d.execute_script(
        "const i = document.getElementById('viewer-img'); return i.complete && i.naturalWidth > 0"))
    view = driver.execute_script("""
        const i = document.getElementById('viewer-img'), v = document.getElementById('viewer');
        const px = document.createElement('canvas'); px.width = i.naturalWidth; px.height = i.naturalHeight;
        const ctx = px.getContext('2d'); ctx.drawImage(i, 0, 0);
        const data = ctx.getImageData(0, 0, px.width, px.height).data; let box = 0;
        for (let n = 0; n < data.length; n += 4)
          if (Math.abs(data[n] - 255) + Math.abs(data[n + 1] - 196) + data[n + 2] < 30) box++;
        return {open: v.open, w: i.naturalWidth, h: i.naturalHeight, box,
                shown: i.getBoundingClientRect().height, title: document.getElementById('viewer-title').textContent,
                link: document.getElementById('viewer-source').getAttribute('href')};""")
    assert view["open"] and view["h"] == 1000 and view["w"] < view["h"] and view["box"] > 500, view
    assert view["shown"] > 400  # larger than the 180 px grid tile
    assert view["title"] == f"notes.pdf, {cards[0]['meta'].split(', ')[1]} (chunk)"
    assert "/sources/" in view["link"] and view["link"].endswith("#page=2")
    driver.find_element(By.ID, "viewer-close").click()
    assert not driver.execute_script("return document.getElementById('viewer').open")


def test_docs_render_with_no_network(service: dict) -> None:
    """Swagger UI's script and style come from the service (fastapi-offline), so /docs works air-gapped."""
    from selenium.webdriver.common.by import By

    driver = service["browser"]
    driver.get(service["url"] + "/docs")
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"))
    assert "mmrag query service" in driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.strip() for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/search", "/query/batch", "/query"} <= paths, paths


def test_a_text_only_snapshot_hides_the_image_upload(ask_service: str, browser) -> None:
    from selenium.webdriver.common.by import By

    browser.get(ask_service + "/")
    _wait(browser, lambda d: d.find_element(By.ID, "image-note").is_displayed())
    image = browser.find_element(By.ID, "image")
    assert not image.is_displayed() and not image.is_enabled()
    assert "no image space" in browser.find_element(By.ID, "image-note").text
