"""POST /query: search the served snapshot by text (JSON) or by image with optional text (multipart); GET /search
(the same text search as a link: curl, a browser's address bar); POST /query/batch (many text queries in one
request). The request and response models and the parsing that checks a query's limits (4xx) before it reaches
the engine."""
from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError, WithJsonSchema
from starlette.datastructures import UploadFile

from mmrag_core.config import Settings
from mmrag_core.query.batched import SearchRequest
from mmrag_core.query.engine import RANKED_LISTS, STRATEGIES
from mmrag_core.query.filters import FILTER_KEYS, QueryFilters
from mmrag_core.service.guards import check_image, check_k, check_text
from mmrag_core.service.batching import QueryBatcher
from mmrag_core.service.routes.deps import ADMITTED, AUTH, BatcherDep, HolderDep, SettingsDep
from mmrag_core.service.snapshot_holder import Answer

# In the OpenAPI schema an enum; checked by _checked (a 422 that names the choices), not by pydantic.
StrategyName = Annotated[str, WithJsonSchema({"type": "string", "enum": list(STRATEGIES)})]
Strategy = StrEnum("Strategy", {s: s for s in STRATEGIES})  # GET /search's parameter
PAGE_0_BASED = ("0-based page number (the first page is 0); the search page and the CLI show it to people as "
                "'p. N' with N = page + 1.")


class QueryRequest(BaseModel):
    """A text query (JSON). For an image query send multipart/form-data with an ``image`` file part and
    optional ``text``, ``k``, ``spaces`` (comma-separated), ``strategy``, ``filters`` (a JSON object) and
    ``dedupe`` (true/false) fields."""

    model_config = {"extra": "forbid"}
    text: str = Field(..., description="Query text.")
    k: int | None = Field(None, description="Hits to return (default: the k setting; at most service_max_k).")
    strategy: StrategyName | None = Field(None, description=f"How ranked lists are produced and combined, among "
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
    page: int = Field(description=PAGE_0_BASED)
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


class BatchRequest(BaseModel):
    """Many text queries in one request (at most service_max_batch), each as POST /query's JSON body."""

    model_config = {"extra": "forbid"}
    queries: list[QueryRequest] = Field(..., min_length=1, description="The queries, answered in this order "
                                        "(at most service_max_batch).")


class BatchResponse(BaseModel):
    results: list[QueryResponse] = Field(description="One answer per query, in the request's order.")


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
async def query(request: Request, settings: SettingsDep, batcher: BatcherDep) -> dict:
    text, image, k, spaces, options = await _parse_query(request, settings)
    return await _search(request, batcher, text, image, k, spaces, options)


@router.get("/search", dependencies=AUTH + ADMITTED, response_model=QueryResponse,
            summary="Search by text from a URL: /search?q=...&k=... (the same answer as POST /query)")
async def search(request: Request, settings: SettingsDep, batcher: BatcherDep,
                 q: Annotated[str, Query(min_length=1, description="Query text.")],
                 k: Annotated[int | None, Query(description="Hits to return (default: the k setting).")] = None,
                 strategy: Annotated[Strategy | None, Query(description="Fusion strategy (default: the "
                                                            "fusion_strategy setting).")] = None,
                 doc: Annotated[list[str] | None, Query(description="Only these documents (file name, name or "
                                                        "sha256); repeat for several.")] = None,
                 kind: Annotated[list[str] | None, Query(description="Only these kinds (chunk, figure, image, "
                                                         "page); repeat for several.")] = None,
                 source: Annotated[list[str] | None, Query(description="Only sources under this URI prefix; "
                                                           "repeat for several.")] = None,
                 pages: Annotated[str | None, Query(description="Page range 'A-B', 0-based like 'page'.")] = None,
                 dedupe: Annotated[bool | None, Query(description="One hit per page (default: the dedupe_pages "
                                                      "setting).")] = None,
                 spaces: Annotated[str | None, Query(description="Comma-separated ranked lists to fuse.")] = None
                 ) -> dict:
    """A GET form of POST /query's text search, so a result list can be a link or a curl line."""
    filters = {name: value for name, value in (("doc", doc), ("kind", kind), ("source", source), ("pages", pages))
               if value}
    k, options = _checked(settings, q, k, strategy.value if strategy else None, filters or None, dedupe)
    names = [n.strip() for n in (spaces or "").split(",") if n.strip()] or None
    return await _search(request, batcher, q, None, k, names, options)


@router.post("/query/batch", dependencies=AUTH + ADMITTED, response_model=BatchResponse,
             summary="Many text queries in one request (at most service_max_batch), answered in order")
async def query_batch(body: BatchRequest, request: Request, settings: SettingsDep, holder: HolderDep) -> dict:
    """One round trip (and one admission place) for an evaluation or a script's list of questions."""
    if len(body.queries) > settings.service_max_batch:
        raise HTTPException(422, f"{len(body.queries)} queries; the limit is {settings.service_max_batch} "
                                 "(service_max_batch)")
    checked = []
    for n, q in enumerate(body.queries):
        try:
            k, options = _checked(settings, q.text, q.k, q.strategy, q.filters, q.dedupe)
        except HTTPException as e:
            raise HTTPException(e.status_code, f"query {n}: {e.detail}") from None
        checked.append((q.text, k, q.spaces, options))

    def run_all() -> list[tuple[Answer, float]]:
        out = []
        for n, (text, k, spaces, options) in enumerate(checked):
            start = time.perf_counter()
            try:
                answer = holder.search(text, None, k, spaces, **options)
            except ValueError as e:
                raise HTTPException(400, f"query {n}: {e}") from e
            out.append((answer, round((time.perf_counter() - start) * 1000, 2)))
        return out

    return {"results": [_response(request, answer, took) for answer, took in await run_in_threadpool(run_all)]}


async def _search(request: Request, batcher: QueryBatcher, text: str | None, image: bytes | None, k: int,
                  spaces: list[str] | None, options: dict) -> dict:
    """One query's response, answered by the micro-batcher together with the queries waiting at the same time
    (:mod:`mmrag_core.service.batching`); ``took_ms`` is the time from submitting it to its answer."""
    start = time.perf_counter()
    try:
        answer = await batcher.search(SearchRequest(text=text, image=image, k=k, spaces=spaces, **options))
    except ValueError as e:
        raise HTTPException(400, str(e)) from e
    return _response(request, answer, round((time.perf_counter() - start) * 1000, 2))


def _response(request: Request, answer: Answer, took: float) -> dict:
    """The QueryResponse of ``answer``: each hit with its thumbnail URL (built from the request's scheme, Host
    and root path, so it is right behind a reverse proxy)."""
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
    k, options = _checked(settings, text, k, strategy, filters, dedupe)
    return text, image, k, spaces, options


def _checked(settings: Settings, text: str | None, k: int | None, strategy: str | None, filters: object,
             dedupe: bool | None) -> tuple[int, dict]:
    """(k, {strategy, filters, dedupe}) of one query, its limits checked (4xx)."""
    check_text(text, settings.service_max_text_chars)
    if strategy is not None and strategy not in STRATEGIES:
        raise HTTPException(422, f"unknown strategy {strategy!r}; choose among {list(STRATEGIES)}")
    try:
        parsed = QueryFilters.parse(filters)
    except ValueError as e:
        raise HTTPException(422, f"bad filters: {e}") from None
    options = {"strategy": strategy, "filters": parsed, "dedupe": dedupe}
    return check_k(settings.k if k is None else k, settings.service_max_k), options
