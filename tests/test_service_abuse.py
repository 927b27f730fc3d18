"""The query API under abuse: wrong or odd auth, path traversal in snapshot ids and thumbnail URLs, limits,
malformed JSON and multipart bodies, image bombs, truncated images of every accepted type. Every request gets
a 4xx (or a 2xx where it is harmless), never a 5xx; the service still answers afterwards."""
from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable

import httpx
import pytest

from tests.test_bad_inputs import png_header_only
from tests.test_service import TOKEN, corpus, service  # noqa: F401 - module-scoped fixtures

Image = pytest.importorskip("PIL.Image")

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _image(fmt: str, size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise(size, 50).convert("RGB").save(buf, fmt)
    return buf.getvalue()


def _image_field(data: bytes, name: str = "q.png", ctype: str = "image/png") -> dict:
    return {"image": (name, data, ctype)}


def _zero_png(width: int, height: int) -> bytes:
    """A real, whole PNG of zeros: a few KB that decode to ``width * height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\0" * ((width // 8 + 2) * height), 9)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _requests(sid: str, item: int) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    """(what, request) pairs: each request made with a client that carries the right token unless it says."""
    cases: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = []

    def add(what: str, fn: Callable[[httpx.Client], httpx.Response]) -> None:
        cases.append((what, fn))

    def raw(method: str, path: str, **kw) -> Callable[[httpx.Client], httpx.Response]:
        return lambda c: c.request(method, path, **kw)

    # auth
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer " + "x" * 8000},
                    {"Authorization": "Bearer tést-tøken".encode()}, {"Authorization": f"bearer {TOKEN} extra"},
                    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": "Basic Og=="}):
        add(f"auth {str(headers['Authorization'])[:20]!r}", raw("POST", "/query", json={"text": "x"}, headers=headers))
    # path traversal and odd ids
    for path in ("/thumbnails/..%2F..%2Fetc%2Fpasswd/1", "/thumbnails/../../etc/passwd", "/thumbnails/%2e%2e/1",
                 f"/thumbnails/{sid}%00/1", "/thumbnails/.hidden/1", "/thumbnails/..../1", "/thumbnails/a%2Fb/1",
                 "/thumbnails/" + "a" * 5000 + "/1", f"/thumbnails/{sid}/-1", f"/thumbnails/{sid}/1e9",
                 f"/thumbnails/{sid}/99999999999999999999999999", f"/thumbnails/{sid}/{item}/../../..",
                 f"/thumbnails/{sid}/%00", "/%2e%2e/%2e%2e/etc/passwd", "/static/../../pyproject.toml",
                 "/snapshots/../../etc", "/docs/../../etc/passwd"):
        add(f"GET {path[:60]}", raw("GET", path))
    for snapshot in ("../../etc", "a/b", "..", "x" * 300, "LATEST\n", "%2e%2e"):
        add(f"query snapshot {snapshot[:20]!r}", raw("POST", "/query", json={"text": "x", "snapshot": snapshot}))
    # limits and odd values
    for k in (0, -1, 10**30, "abc", 1.5, None, [], {}):
        add(f"k={k!r}", raw("POST", "/query", json={"text": "river", "k": k}))
    for text in ("", " ", "\x00" * 100, "a\u202eb\x1b[31m", "x" * 2001, "ß" * 2000, "🦜" * 500,
                 "<script>alert(1)</script>", "' OR 1=1 --"):
        add(f"text {text[:10]!r}", raw("POST", "/query", json={"text": text, "k": 3}))
    for extra in ({"strategy": "nope"}, {"strategy": None}, {"filters": {"kind": ["x"] * 1000}},
                  {"filters": {"nope": 1}}, {"filters": "str"}, {"filters": {"page": {"gte": "a"}}},
                  {"spaces": ["nope"]}, {"spaces": []}, {"spaces": "text"}, {"dedupe": "maybe"},
                  {"unknown": 1}, {"text": None}, {"text": 5}, {"text": ["a"]}):
        add(f"json {extra}", raw("POST", "/query", json={"text": "river", **extra}))
    # malformed JSON
    for body in (b"", b"{", b"[]", b"null", b'"text"', b"42", b"{\"text\": \"a\"", b"\xff\xfe\x00{",
                 b"{\"text\": \"\\ud800\"}", b"[" * 50_000 + b"]" * 50_000, b'{"text": "a", "text": "b"}',
                 b'{"text": "' + b"\\u0000" * 1000 + b'"}',
                 b"{\"text\": 1e999}", b"\x00" * 1000):
        add(f"json body {body[:12]!r}", raw("POST", "/query", content=body,
                                            headers={"Content-Type": "application/json"}))
    add("no content type", raw("POST", "/query", content=b'{"text": "a"}', headers={"Content-Type": ""}))
    add("text/plain", raw("POST", "/query", content=b"river", headers={"Content-Type": "text/plain"}))
    add("xml", raw("POST", "/query", content=b"<q>river</q>", headers={"Content-Type": "application/xml"}))
    # malformed multipart
    png = _image("PNG")
    for ctype, body in (("multipart/form-data", b"--x\r\n"),
                        ("multipart/form-data; boundary=x", b"garbage"),
                        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=\"image\"; "
                         b"filename=\"a.png\"\r\n\r\n" + png[:100]),
                        ("multipart/form-data; boundary=x", b"--x--\r\n"),
                        ("multipart/form-data; boundary=" + "b" * 5000, b"--b\r\n"),
                        ("multipart/form-data; boundary=x",
                         b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n")):
        add(f"multipart {body[:16]!r}", raw("POST", "/query", content=body, headers={"Content-Type": ctype}))
    add("two images", raw("POST", "/query", files=[("image", ("a.png", png, "image/png")),
                                                   ("image", ("b.png", png, "image/png"))]))
    add("image as a text field", raw("POST", "/query", data={"image": "not a file", "k": "1"}))
    add("empty image", raw("POST", "/query", files={"image": ("a.png", b"", "image/png")}))
    add("k text in multipart", raw("POST", "/query", data={"k": "abc"}, files={"image": ("a.png", png, "image/png")}))
    add("k huge in multipart", raw("POST", "/query", data={"k": "9" * 40}, files=_image_field(png)))
    add("1000 fields", raw("POST", "/query", data={f"f{i}": "v" for i in range(1000)}, files=_image_field(png)))
    add("filename traversal", raw("POST", "/query", files={"image": ("../../../etc/passwd", png, "image/png")}))
    # bombs and broken images
    add("bomb header 50000^2", raw("POST", "/query", files=_image_field(png_header_only(50_000, 50_000))))
    add("bomb header 2^31", raw("POST", "/query", files=_image_field(png_header_only(2**31 - 1, 2**31 - 1))))
    add("zero png 20000^2", raw("POST", "/query", files={"image": ("z.png", _zero_png(20_000, 20_000), "image/png")}))
    add("zero png 1x1", raw("POST", "/query", files={"image": ("z.png", _zero_png(1, 1), "image/png")}))
    for fmt in ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF"):
        data = _image(fmt)
        for cut in (1, 10, len(data) // 2, len(data) - 1):  # the last byte may be a trailer: then it decodes
            what = f"last byte cut {fmt}" if cut == len(data) - 1 else f"truncated {fmt} at {cut}"
            add(what, raw("POST", "/query", files={"image": (f"q.{fmt.lower()}", data[:cut],
                                                                                     "application/octet-stream")}))
    svg = b"<svg xmlns='http://www.w3.org/2000/svg'/>"
    add("svg", raw("POST", "/query", files=_image_field(svg, "q.svg", "image/svg+xml")))
    # the enlarged view, the source files, GET /search and the batch endpoint
    for route in ("previews", "sources"):
        for path in (f"/{route}/..%2F..%2Fetc%2Fpasswd/1", f"/{route}/../../etc/passwd", f"/{route}/%2e%2e/{item}",
                     f"/{route}/{sid}/-1", f"/{route}/{sid}/99999999999999999999999999", f"/{route}/{sid}/%00",
                     f"/{route}/{sid}/{item}/../../../../etc/passwd", f"/{route}/{sid}%00/{item}",
                     f"/{route}/LATEST/{item}", f"/{route}/" + "a" * 5000 + f"/{item}"):
            add(f"GET {path[:60]}", raw("GET", path))
    for query in ("q=", "q=%00", "k=5", "q=x&k=-1", "q=x&k=1e9", "q=x&pages=9-1", "q=x&pages=-", "q=x&doc=",
                  "q=x&source=", "q=x&kind=x&kind=y", "q=x&dedupe=maybe", "q=x&spaces=,,", "q=x&strategy=",
                  "q=" + "x" * 5000, "q=x&" + "&".join(f"doc=d{i}" for i in range(500))):
        add(f"GET /search?{query[:40]}", raw("GET", "/search?" + query))
    for body in ({"queries": None}, {"queries": [{}]}, {"queries": [{"text": "x", "k": 0}]},
                 {"queries": [{"text": "x"}] * 1000}, {"queries": [{"text": "x", "filters": "bad"}]},
                 {"queries": [{"text": "x" * 3000}]}, {"queries": [{"text": "x", "unknown": 1}]}, {}):
        add(f"batch {str(body)[:40]}", raw("POST", "/query/batch", json=body))
    # other routes and methods
    for method, path in (("GET", "/query"), ("PUT", "/query"), ("DELETE", "/snapshots"), ("OPTIONS", "/query"),
                         ("HEAD", "/healthz"), ("GET", "/nope"), ("GET", "/metrics?x=" + "y" * 4000),
                         ("TRACE", "/")):
        add(f"{method} {path[:30]}", raw(method, path))
    return cases


def test_no_abusive_request_gets_a_5xx(service: dict) -> None:  # noqa: F811 - the fixture
    client: httpx.Client = service["client"]
    hit = client.post("/query", json={"text": "storm bridge", "k": 1}).json()["hits"][0]
    cases = _requests(service["snapshot"], hit["id"])
    assert len(cases) > 120
    statuses: dict[str, int] = {}
    for what, request in cases:
        try:
            statuses[what] = request(client).status_code
        except httpx.HTTPError as e:  # the server may close a connection on a hopeless request; never crash
            statuses[what] = 0
            assert isinstance(e, (httpx.RemoteProtocolError, httpx.ReadError)), (what, e)
    server_errors = {w: s for w, s in statuses.items() if s >= 500}
    assert not server_errors, server_errors
    # what must be refused is refused
    assert all(statuses[w] == 401 for w in statuses if w.startswith("auth "))
    accepted = {w: s for w, s in statuses.items() if w.startswith(("truncated", "bomb", "zero png 2")) and s < 400}
    assert not accepted, accepted
    assert statuses["GET /thumbnails/../../etc/passwd"] in (404, 422)
    assert all(s in (404, 405, 422) for w, s in statuses.items() if w.startswith(("GET /previews", "GET /sources")))
    assert all(400 <= s < 500 for w, s in statuses.items() if w.startswith("batch "))
    assert {statuses[f"GET /search?{q}"] for q in ("q=", "k=5", "q=x&k=-1", "q=x&pages=9-1", "q=x&doc=")} == {422}
    # and the service still answers
    assert client.post("/query", json={"text": "storm bridge", "k": 1}).status_code == 200
    assert httpx.get(service["url"] + "/healthz").status_code == 200


def test_bomb_refusal_reports_the_real_size(service: dict) -> None:  # noqa: F811 - the fixture
    r = service["client"].post("/query", files={"image": ("b.png", png_header_only(50_000, 50_000), "image/png")})
    assert r.status_code == 413
    assert "2,500,000,000 pixels" in r.json()["detail"] and "service_max_image_pixels" in r.json()["detail"]
