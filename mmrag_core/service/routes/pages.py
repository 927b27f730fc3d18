"""What a browser fetches: the search page at /, the API docs at /docs (Swagger UI served from the
fastapi-offline package's files, so they work offline), the hits' thumbnails and enlarged page views (rendered once,
then cached), and the source files the snapshot's catalog names."""
from __future__ import annotations

import base64
import hashlib
import importlib.util
import mimetypes
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

from mmrag_core.config import Settings
from mmrag_core.ingest.sources import local_path
from mmrag_core.service.routes.deps import AUTH, HolderDep, SettingsDep, StoreDep, ThumbnailsDep
from mmrag_core.service.snapshot_holder import SnapshotHolder
from mmrag_core.service.thumbnails import ThumbnailCache, placeholder, render_preview, render_thumbnail
from mmrag_core.storage.store import storage_options_for

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()
thumbnails_router = APIRouter()  # mounted after the query routes, where it always was in the OpenAPI document


def _page_csp(html: str, script_self: bool = False) -> str:
    """A page's Content-Security-Policy: its inline scripts allowed by hash (and, for /docs, scripts served by
    the service itself), nothing from elsewhere."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    own = "'self' " if script_self else ""
    return (f"default-src 'none'; script-src {own}{hashes}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'")


PAGE_CSP = _page_csp((STATIC / "index.html").read_text())


@router.get("/", include_in_schema=False)
async def search_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Content-Security-Policy": PAGE_CSP})


DOCS_ASSETS = "/docs-assets"  # where app.py mounts the Swagger UI files
# fastapi-offline ships Swagger UI 5 (FastAPI's OpenAPI 3.1 needs 5); only its files are used, not its app class
SWAGGER_UI_DIR = Path(importlib.util.find_spec("fastapi_offline").origin).parent / "static"


@router.get("/docs", include_in_schema=False)
async def api_docs(request: Request) -> HTMLResponse:
    """FastAPI's Swagger UI page with its script and style from this service, not a CDN: air-gapped installs
    get working docs. Its init script is allowed by hash in its own CSP (it names the root path)."""
    root = request.scope.get("root_path", "").rstrip("/")
    page = get_swagger_ui_html(openapi_url=root + (request.app.openapi_url or "/openapi.json"),
                               title=request.app.title + " - docs",
                               swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{root}{DOCS_ASSETS}/favicon.png")
    page.headers["Content-Security-Policy"] = _page_csp(bytes(page.body).decode(), script_self=True)
    return page


PNG_RESPONSE = {200: {"content": {"image/png": {}}}}


@thumbnails_router.get("/thumbnails/{snapshot}/{item_id}", name="thumbnail", dependencies=AUTH,
                       response_class=Response, summary="A small PNG of a hit's page, figure or image",
                       responses=PNG_RESPONSE)
def thumbnail(snapshot: str, item_id: int, settings: SettingsDep, store: StoreDep, holder: HolderDep,
              thumbnails: ThumbnailsDep) -> Response:
    row = _row(holder, snapshot, item_id)
    px = settings.service_thumbnail_px
    return _cached_png(thumbnails, (row.get("item_key") or (snapshot, item_id), px), row["kind"], px,
                       lambda: render_thumbnail(store, settings, row, px))


@thumbnails_router.get("/previews/{snapshot}/{item_id}", name="preview", dependencies=AUTH,
                       response_class=Response, responses=PNG_RESPONSE,
                       summary="The hit's whole page (or image) at service_preview_px with its box outlined")
def preview(snapshot: str, item_id: int, settings: SettingsDep, store: StoreDep, holder: HolderDep,
            thumbnails: ThumbnailsDep) -> Response:
    """The enlarged view of a thumbnail: 256 px cannot be read, and a figure's thumbnail does not show where
    on its page it is."""
    row = _row(holder, snapshot, item_id)
    px = settings.service_preview_px
    return _cached_png(thumbnails, (row.get("item_key") or (snapshot, item_id), px, "page"), row["kind"], px,
                       lambda: render_preview(store, settings, row, px))


@thumbnails_router.get("/sources/{snapshot}/{item_id}", name="source", dependencies=AUTH, response_class=Response,
                       responses={200: {"content": {"application/pdf": {}, "image/*": {}}}},
                       summary="The source file of a hit (a PDF opens at its page with #page=N, N = page + 1)")
def source_file(snapshot: str, item_id: int, settings: SettingsDep, store: StoreDep, holder: HolderDep) -> Response:
    """Only a file the snapshot's catalog names, found through one of its items (never a path from the
    request); 404 when service_serve_sources is off, the item is unknown or the file is gone."""
    if not settings.service_serve_sources:
        raise HTTPException(404, "serving source files is turned off (service_serve_sources)")
    uri = _row(holder, snapshot, item_id)["source_uri"]
    if uri not in holder.catalog_uris(snapshot):
        raise HTTPException(404, f"item {item_id}'s source is not in snapshot {snapshot}'s catalog")
    return _file_response(uri, settings)


def _row(holder: SnapshotHolder, snapshot: str, item_id: int) -> dict:
    row = holder.item(snapshot, item_id)
    if row is None:
        raise HTTPException(404, f"no item {item_id} in snapshot {snapshot}")
    return row


def _cached_png(cache: ThumbnailCache, key: tuple, kind: str, px: int, render: Callable[[], bytes]) -> Response:
    """The cached PNG under ``key``, else ``render()`` (cached); a tile with the error when it fails."""
    png, headers = cache.get(key), {"Cache-Control": "public, max-age=86400, immutable"}
    if png is None:
        try:
            png = render()
            cache.put(key, png)
        except Exception as e:  # noqa: BLE001 - a missing or unreadable source: say so, show a tile
            png = placeholder(kind, px)
            headers = {"X-Thumbnail-Error": " ".join(f"{type(e).__name__}: {e}".split())[:300],
                       "Cache-Control": "no-store"}
    return Response(png, media_type="image/png", headers=headers)


def _file_response(uri: str, settings: Settings) -> Response:
    """The file at ``uri`` shown inline (a local file streamed; an object store's read whole)."""
    name = Path(urlparse(uri).path).name or "source"
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    inline = media_type == "application/pdf" or media_type.startswith("image/")
    disposition = "inline" if inline and media_type != "image/svg+xml" else "attachment"
    headers = {"Cache-Control": "private, max-age=3600"}
    try:
        if urlparse(uri).scheme in ("", "file"):
            path = urlparse(uri).path if uri.startswith("file:") else uri
            if not Path(path).is_file():
                raise FileNotFoundError(uri)
            return FileResponse(path, media_type=media_type, filename=name, content_disposition_type=disposition,
                                headers=headers)
        with local_path(uri, storage_options_for(uri, settings.s3_endpoint_url)) as path:
            data = Path(path).read_bytes()
    except OSError as e:
        raise HTTPException(404, f"the source file of this item cannot be read: {type(e).__name__}") from e
    quoted = name.replace('"', "")
    return Response(data, media_type=media_type,
                    headers={**headers, "Content-Disposition": f'{disposition}; filename="{quoted}"'})
