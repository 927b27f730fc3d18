"""POST /query: search the served snapshot by text (JSON) or by image with optional text (multipart); the request
and response models and the parsing that checks a query's limits (4xx) before it reaches the engine."""
from __future__ import annotations

import json
import time

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import UploadFile

from mmrag_core.config import Settings
from mmrag_core.query.engine import RANKED_LISTS, STRATEGIES
from mmrag_core.query.filters import FILTER_KEYS, QueryFilters
from mmrag_core.service.guards import check_image, check_k, check_text
from mmrag_core.service.routes.deps import ADMITTED, AUTH, HolderDep, SettingsDep

class QueryRequest(BaseModel):
    """A text query (JSON). For an image query send multipart/form-data with an ``image`` file part and
    optional ``text``, ``k``, ``spaces`` (comma-separated), ``strategy``, ``filters`` (a JSON object) and
    ``dedupe`` (true/false) fields."""

    model_config = {"extra": "forbid"}
    text: str = Field(..., description="Query text.")
    k: int | None = Field(None, description="Hits to return (default: the k setting; at most service_max_k).")
    strategy: str | None = Field(None, description=f"How ranked lists are produced and combined, among "
                                 f"{list(STRATEGIES)} (default: the fusion_strategy setting).")
    filters: dict | None = Field(None, description=f"Metadata filters applied inside the search, keys among "
                                 f"{list(FILTER_KEYS)}: source (URI prefix or list), doc (file name, name or sha256, "
                                 "or list), kind (chunk/figure/image or list), pages ('A-B' or [A, B], 0-based).")
    dedupe: bool | None = Field(None, description="One hit per page (default: the dedupe_pages setting); false: "
                                "every matching item.")
    spaces: list[str] | None = Field(None, description=f"Ranked lists to fuse, among {list(RANKED_LISTS)} "
                                     "(default: every list the query and the snapshot allow).")


class HitOut(BaseModel):
    id: int = Field(description="Index id of the item in the answering snapshot (the key of its thumbnail).")
    score: float
    kind: str = Field(description="chunk, figure, image or page.")
    source_uri: str
    page: int = Field(description="0-based page.")
    bbox: list[float] | None = Field(description="[x0, y0, x1, y1] in PDF points (pixels for images).")
    snippet: str
    caption: str | None = None
    ocr_confidence: float | None = Field(description="Mean OCR word confidence 0-100 when the text came from OCR.")
    text_source: str
    ranks: dict[str, int]
    similarities: dict[str, float]
    key: int | None = Field(None, description="Content-derived id: the same item has it in every snapshot.")
    thumbnail_url: str


class QueryResponse(BaseModel):
    snapshot: str = Field(description="The snapshot that answered (every hit comes from it).")
    took_ms: float
    hits: list[HitOut]


MULTIPART_SCHEMA = {"type": "object", "required": ["image"], "properties": {
    "image": {"type": "string", "format": "binary"}, "text": {"type": "string"}, "k": {"type": "integer"},
    "spaces": {"type": "string", "description": "comma-separated ranked lists"},
    "strategy": {"type": "string", "enum": list(STRATEGIES)},
    "filters": {"type": "string", "description": "a JSON object, as the JSON body's 'filters'"},
    "dedupe": {"type": "boolean"}}}
QUERY_OPENAPI = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": QueryRequest.model_json_schema()},
    "multipart/form-data": {"schema": MULTIPART_SCHEMA}}}}


router = APIRouter()


@router.post("/query", dependencies=AUTH + ADMITTED, response_model=QueryResponse, openapi_extra=QUERY_OPENAPI,
             summary="Search by text (JSON) or by image, with optional text (multipart)")
async def query(request: Request, settings: SettingsDep, holder: HolderDep) -> dict:
    text, image, k, spaces, options = await _parse_query(request, settings)
    start = time.perf_counter()
    try:
        answer = await run_in_threadpool(lambda: holder.search(text, image, k, spaces, **options))
    except ValueError as e:
        raise HTTPException(400, str(e)) from e
    took = round((time.perf_counter() - start) * 1000, 2)
    # url_for walks the routes: once per response, not once per hit (0.5 ms a call measured on a busy machine)
    thumbnails_at = str(request.url_for("thumbnail", snapshot=answer.snapshot, item_id="0")).removesuffix("/0")
    hits = [{**h.to_dict(), "thumbnail_url": f"{thumbnails_at}/{h.id}"} for h in answer.hits]
    return {"snapshot": answer.snapshot, "took_ms": took, "hits": hits}


async def _parse_query(request: Request, settings: Settings) -> tuple[str | None, bytes | None, int, list[str] | None,
                                                                     dict]:
    """(text, image, k, spaces, {strategy, filters, dedupe}) of a JSON or multipart query, checked (4xx)."""
    content_type = request.headers.get("content-type", "")
    image = None
    if content_type.startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_fields=8)
        upload = form.get("image")
        if upload is not None and not isinstance(upload, UploadFile):
            raise HTTPException(422, "'image' must be a file part")
        if upload is not None:
            image = check_image(await upload.read(settings.service_max_image_bytes + 1),
                                settings.service_max_image_bytes, settings.service_max_image_pixels)
        text = form.get("text") or None
        if text is not None and not isinstance(text, str):
            raise HTTPException(422, "'text' must be a plain field, not a file")
        raw_k = form.get("k")
        try:
            k = int(raw_k) if raw_k not in (None, "") else None
        except ValueError:
            raise HTTPException(422, f"k must be an integer, got {raw_k!r}") from None
        raw_spaces = ",".join(str(s) for s in form.getlist("spaces"))
        spaces = [s.strip() for s in raw_spaces.split(",") if s.strip()] or None
        strategy, filters, dedupe = (form.get(name) or None for name in ("strategy", "filters", "dedupe"))
        if not all(v is None or isinstance(v, str) for v in (strategy, filters, dedupe)):
            raise HTTPException(422, "'strategy', 'filters' and 'dedupe' must be plain fields, not files")
        if dedupe is not None:
            if dedupe.lower() not in ("true", "false", "1", "0"):
                raise HTTPException(422, f"dedupe must be true or false, got {dedupe!r}")
            dedupe = dedupe.lower() in ("true", "1")
        if filters is not None:
            try:
                filters = json.loads(filters)
            except json.JSONDecodeError as e:
                raise HTTPException(422, f"'filters' must be a JSON object: {e}") from None
        if image is None and not text:
            raise HTTPException(422, "a multipart query needs an 'image' file part, a 'text' field, or both")
    elif content_type.startswith("application/json"):
        try:
            body = QueryRequest.model_validate_json(await request.body())
        except ValidationError as e:
            errors = [{key: v for key, v in err.items() if key in ("loc", "msg", "type")} for err in e.errors()]
            raise HTTPException(422, errors) from None
        text, k, spaces = body.text, body.k, body.spaces
        strategy, filters, dedupe = body.strategy, body.filters, body.dedupe
    else:
        raise HTTPException(415, "send application/json ({\"text\": ..., \"k\": ...}) or multipart/form-data "
                                 "with an 'image' file part")
    check_text(text, settings.service_max_text_chars)
    if strategy is not None and strategy not in STRATEGIES:
        raise HTTPException(422, f"unknown strategy {strategy!r}; choose among {list(STRATEGIES)}")
    try:
        parsed = QueryFilters.parse(filters)
    except ValueError as e:
        raise HTTPException(422, f"bad filters: {e}") from None
    options = {"strategy": strategy, "filters": parsed, "dedupe": dedupe}
    return text, image, check_k(settings.k if k is None else k, settings.service_max_k), spaces, options
