"""POST /answer: a cited answer from the served snapshot (extractive by default), whole (JSON) or streamed
(server-sent events)."""
from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from mmrag_core.answer.generators import GenerationError
from mmrag_core.models import ModelUnavailable
from mmrag_core.service.answers import AnswerRequest
from mmrag_core.service.guards import check_k, check_text
from mmrag_core.service.routes.deps import ADMITTED, AUTH, AnswererDep, SettingsDep

router = APIRouter()


@router.post("/answer", dependencies=AUTH + ADMITTED,
             summary="A cited answer from the served snapshot, extractive by default (stream: server-sent events)")
async def answer(body: AnswerRequest, settings: SettingsDep, answerer: AnswererDep) -> Response:
    check_text(body.question, settings.service_max_text_chars)
    if not body.question.strip():
        raise HTTPException(422, "a question is needed")
    extractive = (body.answerer or settings.answerer) == "extractive"
    default_k = settings.extractive_k if extractive else settings.answer_k
    k = check_k(default_k if body.k is None else body.k, settings.service_max_k)
    if body.stream:
        return StreamingResponse(answerer.events(body.question, k, extractive), media_type="text/event-stream")
    if extractive:
        return JSONResponse((await run_in_threadpool(answerer.extractive, body.question, k)).to_dict())
    try:
        result = await run_in_threadpool(answerer.answer, body.question, k)
    except (GenerationError, ModelUnavailable) as e:  # the generator, not the request, failed
        raise HTTPException(502, f"the generator failed: {e}") from e
    return JSONResponse(result.to_dict())
