"""What a browser fetches: the search page at / and the hits' thumbnails (rendered once, then cached)."""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response

from mmrag_core.service.routes.deps import AUTH, HolderDep, SettingsDep, StoreDep, ThumbnailsDep
from mmrag_core.service.thumbnails import placeholder, render_thumbnail

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter()
thumbnails_router = APIRouter()  # mounted after the query routes, where it always was in the OpenAPI document


def _page_csp(html: str) -> str:
    """The search page's Content-Security-Policy: its one inline script allowed by hash, nothing from elsewhere."""
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)
    return (f"default-src 'none'; script-src {hashes}; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
            "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


PAGE_CSP = _page_csp((STATIC / "index.html").read_text())


@router.get("/", include_in_schema=False)
async def search_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Content-Security-Policy": PAGE_CSP})


@thumbnails_router.get("/thumbnails/{snapshot}/{item_id}", name="thumbnail", dependencies=AUTH,
                       response_class=Response, summary="A small PNG of a hit's page, figure or image",
                       responses={200: {"content": {"image/png": {}}}})
def thumbnail(snapshot: str, item_id: int, settings: SettingsDep, store: StoreDep, holder: HolderDep,
              thumbnails: ThumbnailsDep) -> Response:
    row = holder.item(snapshot, item_id)
    if row is None:
        raise HTTPException(404, f"no item {item_id} in snapshot {snapshot}")
    px = settings.service_thumbnail_px
    cache_key = (row.get("item_key") or (snapshot, item_id), px)
    png, headers = thumbnails.get(cache_key), {"Cache-Control": "public, max-age=86400, immutable"}
    if png is None:
        try:
            png = render_thumbnail(store, settings, row, px)
            thumbnails.put(cache_key, png)
        except Exception as e:  # noqa: BLE001 - a missing or unreadable source: say so, show a tile
            png = placeholder(row["kind"], px)
            headers = {"X-Thumbnail-Error": " ".join(f"{type(e).__name__}: {e}".split())[:300],
                       "Cache-Control": "no-store"}
    return Response(png, media_type="image/png", headers=headers)
