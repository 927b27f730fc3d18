"""The HTTP query service (``mmrag serve``) through a real uvicorn server and real HTTP requests: queries by
text and image, limits, auth, snapshots, health, metrics, thumbnails, the search page, and the swap to a newly
published snapshot under load."""
from __future__ import annotations

import io
import json
import shutil
import statistics
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from mmrag_core.config import Settings
from mmrag_core.service import create_app
from mmrag_core.snapshot.open import load_manifest, read_table
from mmrag_core.storage.store import Store
from tests.live_server import live_server
from tests.query_corpus import SENTENCES, chunk_doc, offline_query_corpus, png_bytes, publish_docs

Image = pytest.importorskip("PIL.Image")

TOKEN = "test-token-123"
LIMITS = {"service_max_k": 20, "service_max_image_bytes": 200_000, "service_max_image_pixels": 1_000_000,
          "service_max_body_bytes": 1_000_000, "service_max_text_chars": 2000, "service_max_batch": 3}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with offline_query_corpus(tmp_path_factory.mktemp("service"), files=True) as corpus:
        yield corpus


@pytest.fixture(scope="module")
def service(corpus: dict) -> Iterator[dict]:
    store: Store = corpus["store"]
    settings = Settings(store=store.uri, service_token=TOKEN, service_poll_seconds=0, **LIMITS)
    with live_server(create_app(settings)) as url, \
            httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as client:
        yield {"url": url, "client": client, "snapshot": store.latest_id(), **corpus}


def _query(client: httpx.Client, **body) -> httpx.Response:
    return client.post("/query", json=body)


def test_text_query(service: dict) -> None:
    r = _query(service["client"], text="How do plants turn light into sugar?", k=5)
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["snapshot"] == service["snapshot"] and data["took_ms"] > 0
    hits = data["hits"]
    assert 1 <= len(hits) <= 5
    top = hits[0]
    _sha, uri, items, _ = service["docs"][0]
    assert top["snippet"] == SENTENCES[1] and top["source_uri"] == uri and top["page"] == 1
    assert top["kind"] == "chunk" and top["key"] == items[1].id
    assert top["bbox"] == [72.0, 110.0, 540.12, 190.0]
    assert top["ocr_confidence"] is None and top["caption"] is None and top["ranks"]["text"] == 1
    assert top["thumbnail_url"] == f"{service['url']}/thumbnails/{data['snapshot']}/{top['id']}"


def test_text_query_selected_spaces(service: dict) -> None:
    r = _query(service["client"], text="espresso coffee", k=20, spaces=["text"])
    assert r.status_code == 200, r.text
    assert {s for h in r.json()["hits"] for s in h["ranks"]} == {"text"}
    r = _query(service["client"], text="espresso", spaces=["nonsense"])
    assert r.status_code == 400 and "unknown ranked list" in r.json()["detail"]


@pytest.mark.parametrize("which", [0, 2])
def test_image_query_multipart(service: dict, which: int) -> None:
    files = {"image": ("q.png", service["pngs"][which], "image/png")}
    r = service["client"].post("/query", files=files, data={"k": "3", "dedupe": "false"})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    assert len(hits) == 3 and hits[0]["key"] == service["images"][which].id  # the album's 3 images (one page)
    assert hits[0]["kind"] == "image" and hits[0]["ranks"] == {"image:image": 1}


def test_image_and_text_query_multipart(service: dict) -> None:
    files = {"image": ("q.png", service["pngs"][0], "image/png")}
    r = service["client"].post("/query", files=files, data={"text": "espresso coffee", "k": "20"})
    assert r.status_code == 200, r.text
    assert {s for h in r.json()["hits"] for s in h["ranks"]} == {"text", "image:text", "image:image", "lexical",
                                                                "routed"}


def test_k_limits(service: dict) -> None:
    client = service["client"]
    assert len(_query(client, text="anything at all", k=2).json()["hits"]) == 2
    for k in (0, 21):
        r = _query(client, text="anything", k=k)
        assert r.status_code == 422 and "service_max_k" in r.json()["detail"] and "20" in r.json()["detail"]
    r = client.post("/query", files={"image": ("q.png", service["pngs"][0], "image/png")}, data={"k": "99"})
    assert r.status_code == 422 and "service_max_k" in r.json()["detail"]


def test_bad_requests_are_clear(service: dict) -> None:
    client = service["client"]
    r = client.post("/query", json={"k": 3})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["text"]
    r = client.post("/query", content=b"text=hello", headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/query", files={"image": ("q.png", b"not an image at all", "image/png")})
    assert r.status_code == 400 and "could not be decoded" in r.json()["detail"]
    r = client.post("/query", data={"k": "3"}, files={"other": ("x", b"x")})
    assert r.status_code == 422 and "image" in r.json()["detail"]
    r = _query(client, text="x" * 2001)
    assert r.status_code == 413 and "service_max_text_chars" in r.json()["detail"]


def test_image_limits(service: dict) -> None:
    client = service["client"]
    noise = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)))
    assert len(noise) > LIMITS["service_max_image_bytes"]
    r = client.post("/query", files={"image": ("big.png", noise, "image/png")})
    assert r.status_code == 413 and "service_max_image_bytes" in r.json()["detail"]
    wide = png_bytes(Image.new("RGB", (2000, 1000), (1, 2, 3)))
    assert len(wide) < LIMITS["service_max_image_bytes"]
    r = client.post("/query", files={"image": ("wide.png", wide, "image/png")})
    assert r.status_code == 413 and "service_max_image_pixels" in r.json()["detail"]


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"])
def test_truncated_image_of_every_type_is_a_400(service: dict, fmt: str) -> None:
    """The header says a small image, the pixels are cut short: a client's mistake, never a 5xx."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, fmt)
    data = buf.getvalue()
    truncated = data[: len(data) // 2]
    r = service["client"].post("/query", files={"image": (f"q.{fmt.lower()}", truncated, "image/octet-stream")})
    assert r.status_code == 400, (r.status_code, r.text)
    assert "could not be decoded" in r.json()["detail"]


def test_body_limit(service: dict) -> None:
    client = service["client"]
    r = client.post("/query", content=b'{"text": "' + b"a" * 1_100_000 + b'"}',
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "service_max_body_bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused while streaming
        yield b'{"text": "'
        for _ in range(20):
            yield b"b" * 100_000
        yield b'"}'

    r = client.post("/query", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "service_max_body_bytes" in r.json()["detail"]


def test_auth(service: dict) -> None:
    url = service["url"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (("POST", "/query"), ("GET", "/snapshots"), ("GET", "/metrics")):
            r = httpx.request(method, url + path, json={"text": "x"}, headers=headers)
            assert r.status_code == 401, (method, path, headers)
            assert "bearer token" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/healthz").status_code == 200
    assert httpx.get(url + "/").status_code == 200


def test_healthz_and_snapshots(service: dict) -> None:
    r = httpx.get(service["url"] + "/healthz")
    assert r.json() == {"status": "ok", "snapshot": service["snapshot"]}
    data = service["client"].get("/snapshots").json()
    assert data["served"] == data["latest"] == service["snapshot"]
    (row,) = data["snapshots"]
    assert row["id"] == service["snapshot"] and row["served"] and row["latest"]
    assert row["counts"]["items"] == 9 and row["spaces"] == ["image", "text"]


def test_thumbnails(service: dict) -> None:
    client = service["client"]
    hits = _query(client, text="vaccine trial volunteers", k=1).json()["hits"]
    r = client.get(hits[0]["thumbnail_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
    assert "x-thumbnail-error" not in r.headers
    page = Image.open(io.BytesIO(r.content))
    assert max(page.size) == 256 and page.size[1] > page.size[0]  # a portrait page
    assert client.get(hits[0]["thumbnail_url"]).content == r.content  # from the cache
    files = {"image": ("q.png", service["pngs"][1], "image/png")}
    hit = client.post("/query", files=files, data={"k": "1"}).json()["hits"][0]
    r = client.get(hit["thumbnail_url"])
    assert r.status_code == 200 and "x-thumbnail-error" not in r.headers
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")),
                          np.asarray(Image.open(io.BytesIO(service["pngs"][1])).convert("RGB")))
    sid = service["snapshot"]
    assert client.get(f"/thumbnails/{sid}/123456789").status_code == 404
    assert client.get(f"/thumbnails/20000101T000000000000Z/{hit['id']}").status_code == 404
    assert client.get(f"/thumbnails/{sid}/not-a-number").status_code == 422


def test_metrics(service: dict) -> None:
    client = service["client"]
    _query(client, text="storm bridge", k=1)
    _query(client, text="storm bridge", k=0)
    text = client.get("/metrics").text
    assert 'mmrag_http_requests_total{endpoint="/query",method="POST",status="200"}' in text
    assert 'mmrag_http_requests_total{endpoint="/query",method="POST",status="422"}' in text
    assert 'mmrag_http_request_duration_seconds_bucket{endpoint="/query",le="0.1"}' in text
    assert f'mmrag_snapshot_served{{snapshot="{service["snapshot"]}"}} 1.0' in text


def test_search_page_and_docs(service: dict) -> None:
    r = httpx.get(service["url"] + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    for needle in ('fetch("/query"', "FormData", 'type="file"', "thumbnail_url", "source_uri", "snippet",
                   "Authorization"):
        assert needle in page
    assert httpx.get(service["url"] + "/docs").status_code == 200
    spec = httpx.get(service["url"] + "/openapi.json").json()
    body = spec["paths"]["/query"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert {"/snapshots", "/healthz", "/metrics", "/thumbnails/{snapshot}/{item_id}"} <= set(spec["paths"])


@pytest.mark.slow
def test_thumbnail_of_missing_source_is_an_error_then_a_placeholder(service: dict) -> None:
    from mmrag_core.service.thumbnails import placeholder, render_thumbnail

    row = {"kind": "chunk", "source_uri": "/nowhere/gone.pdf", "page": 0, "bbox": [0, 0, 10, 10],
           "doc_sha256": "0" * 64, "item_key": 1}
    with pytest.raises(FileNotFoundError):
        render_thumbnail(service["store"], Settings(store=service["store"].uri), row, 64)
    tile = Image.open(io.BytesIO(placeholder("chunk", 64)))
    assert tile.format == "PNG" and max(tile.size) == 64


def test_nothing_published_yet(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with live_server(create_app(Settings(store=str(tmp_path / "empty"), service_poll_seconds=0))) as url:
        health = httpx.get(url + "/healthz")
        query = httpx.post(url + "/query", json={"text": "anything"})
        snapshots = httpx.get(url + "/snapshots")
    assert health.status_code == 503 and health.json() == {"status": "no snapshot", "snapshot": None}
    assert query.status_code == 503 and "none is published" in query.json()["detail"]
    assert snapshots.json() == {"served": None, "latest": None, "snapshots": []}



def test_security_headers(service: dict) -> None:
    client = service["client"]
    for path in ("/", "/healthz", "/snapshots", "/openapi.json"):
        r = client.get(path)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer", path
    csp = client.get("/").headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp.split("script-src")[1].split(";")[0]


def test_a_flood_gets_503_with_retry_after_and_the_service_recovers(corpus: dict) -> None:
    """With every place of the bounded queue taken by slow queries, the next request is refused at once (not
    queued), counted in the metrics, and once the slow ones finish the service answers again."""
    store: Store = corpus["store"]
    app = create_app(Settings(store=store.uri, service_poll_seconds=0, service_max_queue=2))
    holder, gate, release, entered = app.state.holder, app.state.gate, threading.Event(), threading.Semaphore(0)
    real_search = holder.encode_many  # what the micro-batcher calls for each batch of text queries

    def slow_search(*args, **kwargs):
        entered.release()
        release.wait(30)
        return real_search(*args, **kwargs)

    holder.encode_many = slow_search
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client, \
            ThreadPoolExecutor(2) as pool:
        slow = [pool.submit(client.post, "/query", json={"text": "espresso"}) for _ in range(2)]
        assert entered.acquire(timeout=30)  # one is searching; the other searching too or waiting for it
        deadline = time.monotonic() + 30
        while gate.active < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert gate.active == 2  # both places taken
        refused = [client.post("/query", json={"text": "bridge"}) for _ in range(3)]
        assert [r.status_code for r in refused] == [503] * 3
        assert refused[0].headers["retry-after"] == "1" and "service_max_queue" in refused[0].json()["detail"]
        release.set()
        assert [f.result().status_code for f in slow] == [200, 200]
        holder.encode_many = real_search
        assert client.post("/query", json={"text": "bridge"}).status_code == 200
        metrics = client.get("/metrics").text
    assert 'mmrag_http_rejected_total{endpoint="/query"} 3.0' in metrics


VOLCANO = ["A volcano erupted and grey ash covered the nearby villages.",
           "Lava flows destroyed the road to the observatory on the mountain.",
           "Seismographs recorded hundreds of small earthquakes before the eruption."]


def test_swap_to_new_snapshot_under_load(corpus: dict, tmp_path: Path) -> None:
    """LATEST moves while requests keep coming: every request succeeds, each answered wholly by the snapshot
    it names, and the service ends up on the new one."""
    store = Store(tmp_path / "store")
    shutil.copytree(corpus["store"].root, store.root)
    first = store.latest_id()
    settings = Settings(store=store.uri, service_poll_seconds=0.1)
    results: list[tuple[int, dict, float]] = []
    stop = threading.Event()

    def fire(url: str) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not stop.is_set():
                start = time.perf_counter()
                r = client.post("/query", json={"text": "volcanic ash fell on the villages", "k": 4})
                results.append((r.status_code, r.json(), time.perf_counter() - start))

    with live_server(create_app(settings)) as url, ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(fire, url) for _ in range(4)]
        _wait(lambda: len(results) >= 20)
        doc = chunk_doc("volcano.pdf", VOLCANO, corpus["text_enc"], corpus["folder"])
        second = publish_docs(store, [doc], corpus["models"])["id"]
        _wait(lambda: sum(1 for _, d, _ in results if d.get("snapshot") == second) >= 20)
        stop.set()
        for f in futures:
            f.result()
        served = httpx.get(url + "/healthz").json()["snapshot"]
        old_answer = next(d for _, d, _ in results if d["snapshot"] == first)
        old_thumbnail = httpx.get(old_answer["hits"][0]["thumbnail_url"])  # an older snapshot's item
        (store.root / "LATEST").write_text("20990101T000000000000Z\n")  # a snapshot that cannot be loaded
        _wait(lambda: "mmrag_snapshot_swap_failures_total 1.0" in httpx.get(url + "/metrics").text)
        still = httpx.post(url + "/query", json={"text": "volcano", "k": 1})
        swaps = httpx.get(url + "/metrics").text
    assert served == second != first
    assert old_thumbnail.status_code == 200 and old_thumbnail.headers["content-type"] == "image/png"
    assert still.status_code == 200 and still.json()["snapshot"] == second  # the old one keeps serving
    assert "mmrag_snapshot_swaps_total 2.0" in swaps  # the first load and the swap
    assert f'mmrag_snapshot_served{{snapshot="{second}"}} 1.0' in swaps and first not in swaps
    assert [s for s, _, _ in results if s != 200] == []
    ids = {sid: set(read_table(store, load_manifest(store, sid), "items.parquet").column("id").to_pylist())
           for sid in (first, second)}
    seen = {first: 0, second: 0}
    for _, data, _ in results:
        sid = data["snapshot"]
        seen[sid] += 1
        hits = data["hits"]
        assert {h["id"] for h in hits} <= ids[sid]
        assert all(h["thumbnail_url"].endswith(f"/thumbnails/{sid}/{h['id']}") for h in hits)
        if sid == first:
            assert all(not h["source_uri"].endswith("volcano.pdf") for h in hits)
        else:
            assert hits[0]["source_uri"].endswith("volcano.pdf") and hits[0]["snippet"] == VOLCANO[0]
    assert seen[first] >= 20 and seen[second] >= 20
    took = sorted(t for _, _, t in results)
    print(f"\nswap under load: {len(results)} requests from 4 threads, all 200; {seen[first]} answered by the old "
          f"snapshot, {seen[second]} by the new; p50 {statistics.median(took) * 1000:.1f} ms, "
          f"max {took[-1] * 1000:.1f} ms")


def _wait(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_search_get_is_post_query_as_a_link(service: dict) -> None:
    """GET /search?q=... answers as POST /query does (same model, auth, limits); a client's mistakes are 4xx."""
    client = service["client"]
    posted = _query(client, text="How do plants turn light into sugar?", k=3).json()
    got = client.get("/search", params={"q": "How do plants turn light into sugar?", "k": 3})
    assert got.status_code == 200, got.text
    assert [h["id"] for h in got.json()["hits"]] == [h["id"] for h in posted["hits"]]
    assert got.json()["hits"][0]["thumbnail_url"] == posted["hits"][0]["thumbnail_url"]
    only = client.get("/search", params={"q": "espresso", "k": 20, "kind": "image", "dedupe": "false"}).json()
    assert only["hits"] and {h["kind"] for h in only["hits"]} == {"image"}
    pages = client.get("/search", params={"q": "espresso coffee", "k": 20, "pages": "2-2", "kind": "chunk"}).json()
    assert pages["hits"] and {h["page"] for h in pages["hits"]} == {2}
    doc = client.get("/search", params={"q": "bridge", "k": 20, "doc": "notes.pdf", "kind": "chunk"}).json()
    assert doc["hits"] and all(h["source_uri"].endswith("notes.pdf") for h in doc["hits"])
    for params, status in (({}, 422), ({"q": ""}, 422), ({"q": "x", "k": 0}, 422), ({"q": "x", "k": "many"}, 422),
                           ({"q": "x", "strategy": "magic"}, 422), ({"q": "x", "kind": "poem"}, 422),
                           ({"q": "x", "pages": "z"}, 422), ({"q": "x" * 2001}, 413),
                           ({"q": "x", "spaces": "nonsense"}, 400)):
        r = client.get("/search", params=params)
        assert r.status_code == status, (params, r.status_code, r.text)
    assert httpx.get(service["url"] + "/search", params={"q": "x"}).status_code == 401
    spec = client.get("/openapi.json").json()
    strategy = next(p for p in spec["paths"]["/search"]["get"]["parameters"] if p["name"] == "strategy")
    assert "Strategy" in json.dumps(strategy["schema"])
    assert spec["components"]["schemas"]["Strategy"]["enum"] == ["late", "early", "cascade", "unified"]
    hit_page = spec["components"]["schemas"]["HitOut"]["properties"]["page"]["description"]
    assert "0-based" in hit_page and "p. N" in hit_page
    assert spec["components"]["schemas"]["QueryRequest"]["properties"]["strategy"]["anyOf"][0]["enum"] == [
        "late", "early", "cascade", "unified"]


def test_query_batch(service: dict) -> None:
    client = service["client"]
    questions = ["How do plants turn light into sugar?", "espresso coffee", "storm bridge"]
    r = client.post("/query/batch", json={"queries": [{"text": q, "k": 2} for q in questions]})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert len(results) == 3 and all(res["snapshot"] == service["snapshot"] for res in results)
    assert [res["hits"][0]["snippet"] for res in results] == [SENTENCES[1], SENTENCES[5], SENTENCES[2]]
    assert all(len(res["hits"]) == 2 and res["hits"][0]["thumbnail_url"].startswith(service["url"])
               for res in results)
    too_many = client.post("/query/batch", json={"queries": [{"text": "x"}] * 4})
    assert too_many.status_code == 422 and "service_max_batch" in too_many.json()["detail"]
    bad = client.post("/query/batch", json={"queries": [{"text": "x"}, {"text": "y", "strategy": "magic"}]})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("query 1: unknown strategy")
    for body in ({"queries": []}, {"queries": [{"k": 2}]}, {"text": "x"}, {"queries": "x"}):
        assert client.post("/query/batch", json=body).status_code == 422, body
    assert client.post("/query/batch", json={"queries": [{"text": "x", "k": 99}]}).status_code == 422
    assert client.post("/query/batch", json={"queries": [{"text": "x", "spaces": ["no"]}]}).status_code == 400
    assert client.post("/query/batch", content=b"{not json", headers={"Content-Type": "application/json"}
                       ).status_code == 422
    assert httpx.post(service["url"] + "/query/batch", json={"queries": [{"text": "x"}]}).status_code == 401


def test_preview_is_the_whole_page_larger_with_the_box(service: dict) -> None:
    client = service["client"]
    hit = _query(client, text="vaccine trial volunteers", k=1).json()["hits"][0]
    r = client.get(hit["thumbnail_url"].replace("/thumbnails/", "/previews/"))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and "x-thumbnail-error" not in r.headers
    page = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert max(page.size) == 1000 and page.size[1] > page.size[0]  # service_preview_px, the whole portrait page
    pixels = np.asarray(page).reshape(-1, 3)
    assert (np.abs(pixels.astype(int) - (255, 196, 0)).sum(axis=1) < 30).sum() > 500  # the box, outlined
    assert client.get(hit["thumbnail_url"].replace("/thumbnails/", "/previews/")).content == r.content  # cached
    sid = service["snapshot"]
    assert client.get(f"/previews/{sid}/123456789").status_code == 404
    assert client.get(f"/previews/20000101T000000000000Z/{hit['id']}").status_code == 404
    assert httpx.get(f"{service['url']}/previews/{sid}/{hit['id']}").status_code == 401


def test_sources_serve_only_catalogued_files(service: dict) -> None:
    """GET /sources/{snapshot}/{item_id}: the file behind a hit, with the token, for items of a published
    snapshot only; nothing named by a path in the request."""
    client, sid, url = service["client"], service["snapshot"], service["url"]
    hit = _query(client, text="vaccine trial volunteers", k=1).json()["hits"][0]
    r = client.get(f"/sources/{sid}/{hit['id']}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", r.text
    assert r.content == Path(hit["source_uri"]).read_bytes()
    assert r.headers["content-disposition"].startswith("inline") and "notes.pdf" in r.headers["content-disposition"]
    assert httpx.get(f"{url}/sources/{sid}/{hit['id']}").status_code == 401
    for path in (f"/sources/{sid}/123456789", f"/sources/20000101T000000000000Z/{hit['id']}",
                 f"/sources/not-a-snapshot/{hit['id']}", f"/sources/..%2F..%2Fetc/{hit['id']}",
                 f"/sources/{sid}/..%2F..%2F..%2Fetc%2Fpasswd", "/sources/../../etc/passwd",
                 f"/sources/{sid}/{hit['id']}/..%2F..%2Fetc%2Fpasswd"):
        r = client.get(path)
        assert r.status_code in (404, 422), (path, r.status_code)
        assert b"root:" not in r.content


def test_info(service: dict) -> None:
    data = service["client"].get("/info").json()
    assert data["snapshot"] == service["snapshot"] and data["store"] == service["store"].uri
    assert data["documents"] == 3 and data["items"] == 9 and data["pages"] >= 3 and data["published"]
    assert data["image_search"] and data["spaces"] == ["image", "text"] and data["serve_sources"]
    assert httpx.get(service["url"] + "/info").status_code == 401


def test_docs_are_served_offline(service: dict) -> None:
    """/docs loads Swagger UI from this service (fastapi-offline), not a CDN, under its own CSP."""
    url = service["url"]
    r = httpx.get(url + "/docs")
    assert r.status_code == 200 and "/docs-assets/swagger-ui-bundle.js" in r.text and "cdn" not in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self' 'sha256-" in csp and "default-src 'none'" in csp
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert httpx.get(f"{url}/docs-assets/{asset}").status_code == 200  # no token needed, like /docs


def test_proxy_headers_and_root_path(corpus: dict) -> None:
    """Behind a reverse proxy (trusted: service_forwarded_allow_ips) serving under service_root_path, the
    thumbnail URLs and /docs carry the client's scheme, host and prefix; service_serve_sources=false: 404."""
    settings = Settings(store=corpus["store"].uri, service_poll_seconds=0, service_root_path="/mmrag/",
                        service_serve_sources=False)
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "search.example.org",
                 "X-Forwarded-For": "203.0.113.9"}
    with live_server(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for path in ("/query", "/mmrag/query"):  # the proxy strips the prefix, or passes it on
            hit = client.post(path, json={"text": "storm bridge", "k": 1}, headers=forwarded).json()["hits"][0]
            assert hit["thumbnail_url"].startswith("https://search.example.org/mmrag/thumbnails/"), hit
        plain = client.post("/query", json={"text": "storm bridge", "k": 1}).json()["hits"][0]
        assert plain["thumbnail_url"].startswith(f"{url}/mmrag/thumbnails/")
        docs = client.get("/docs", headers=forwarded).text
        assert "'/mmrag/openapi.json'" in docs and "/mmrag/docs-assets/swagger-ui-bundle.js" in docs
        r = client.get(f"/sources/{plain['thumbnail_url'].split('/')[-2]}/{plain['id']}")
        assert r.status_code == 404 and "service_serve_sources" in r.json()["detail"]
        assert client.get("/info").json()["serve_sources"] is False


def test_forwarded_headers_only_from_trusted_peers() -> None:
    import asyncio

    from mmrag_core.service.guards import ForwardedHeadersMiddleware

    seen: list[dict] = []

    async def app(scope, _receive, _send) -> None:
        seen.append(scope)

    headers = [(b"host", b"10.0.0.5:8000"), (b"x-forwarded-host", b"search.example.org"),
               (b"x-forwarded-proto", b"https")]
    for trusted, peer, host, scheme in (("127.0.0.1", "127.0.0.1", b"search.example.org", "https"),
                                        ("127.0.0.1", "198.51.100.7", b"10.0.0.5:8000", "http"),
                                        ("*", "198.51.100.7", b"search.example.org", "https")):
        scope = {"type": "http", "headers": headers, "client": (peer, 1234), "scheme": "http"}
        asyncio.run(ForwardedHeadersMiddleware(app, trusted)(scope, None, None))
        assert dict(seen[-1]["headers"])[b"host"] == host and seen[-1]["scheme"] == scheme, (trusted, peer)
