"""What the query service refuses: requests without the bearer token, bodies, images, texts and k over
their limits. Every refusal is a JSON ``{"detail": ...}`` that names the setting behind the limit."""
from __future__ import annotations

import io
import json
import secrets
import threading
import warnings

from fastapi import HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

bearer_scheme = HTTPBearer(auto_error=False, description="The service_token setting (MMRAG_SERVICE_TOKEN).")


def token_checker(token: SecretStr | None):
    """A dependency that lets a request through when no token is configured or it carries the right one."""
    expected = token.get_secret_value().encode() if token is not None else None

    async def check(credentials: HTTPAuthorizationCredentials | None = None) -> None:
        if expected is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if credentials is None or not secrets.compare_digest(given, expected):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <service_token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    async def dependency(request: Request) -> None:
        await check(await bearer_scheme(request))

    return dependency


def refuse(status: int, message: str) -> HTTPException:
    return HTTPException(status, message)


def check_k(k: int, max_k: int) -> int:
    if not 1 <= k <= max_k:
        raise refuse(422, f"k must be between 1 and {max_k} (service_max_k), got {k}")
    return k


def check_text(text: str | None, max_chars: int) -> str | None:
    if text is not None and len(text) > max_chars:
        raise refuse(413, f"query text has {len(text)} characters; the limit is {max_chars} (service_max_text_chars)")
    return text


def check_image(data: bytes, max_bytes: int, max_pixels: int) -> bytes:
    """The image bytes, if they are under the byte limit and decode whole to an image under the pixel limit
    (the pixel count is read from the header first, so a decompression bomb is never decoded)."""
    from PIL import Image

    if len(data) > max_bytes:
        raise refuse(413, f"image is {len(data)} bytes; the limit is {max_bytes} (service_max_image_bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            width, height = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError as e:  # over twice Pillow's own limit: its message has the true count
        raise refuse(413, f"image has {_bomb_pixels(e)} pixels; the limit is {max_pixels:,} "
                          "(service_max_image_pixels)") from e
    except Exception as e:
        raise refuse(400, f"image could not be decoded: {e}") from e
    if width * height > max_pixels:
        raise refuse(413, f"image is {width} x {height} = {width * height:,} pixels; the limit is {max_pixels:,} "
                          "(service_max_image_pixels)")
    try:  # now that the size is known to be bounded: decode every pixel, so a truncated file is a 400, not a 500
        with Image.open(io.BytesIO(data)) as img:
            img.load()
    except Exception as e:
        raise refuse(400, f"image could not be decoded: {e}") from e
    return data


def _bomb_pixels(error: Exception) -> str:
    """The pixel count (width x height) a DecompressionBombError reports, e.g. ``2,500,000,000``; Pillow raises it
    from the header, before any pixel is decoded."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(error))
    return f"{int(found.group(1)):,}" if found else "more than Pillow's decompression-bomb limit of"


class AdmissionGate:
    """Counts the queries and answers in progress or waiting; refuses one past ``limit`` instead of queueing it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()

    def enter(self) -> bool:
        with self._lock:
            if self.active >= self.limit:
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


RETRY_AFTER_SECONDS = 1
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"))


class SecurityHeadersMiddleware:
    """Adds the headers every response should carry (no MIME sniffing, no framing, no referrer); the search page
    sets its own Content-Security-Policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((k, v) for k, v in SECURITY_HEADERS if k not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodySizeLimitMiddleware:
    """Refuses a request body over ``max_bytes`` with 413: at once from its Content-Length, or, when it is
    streamed without one, as soon as the bytes received pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send, int(declared))
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(received)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge as e:
            if started:
                raise
            await self._refuse(send, e.size)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps({"detail": f"request body is over {self.max_bytes} bytes ({size} received or declared; "
                                     "service_max_body_bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


class ForwardedHeadersMiddleware:
    """Behind a reverse proxy: from a trusted peer (``service_forwarded_allow_ips``), X-Forwarded-Host becomes
    the request's Host and X-Forwarded-Proto/-For its scheme and client (uvicorn's middleware), so the URLs
    the service builds (``thumbnail_url``) are the ones the client used; other peers' headers are ignored.
    uvicorn knows no X-Forwarded-Host, hence this wrapper (``mmrag serve`` turns uvicorn's own off). A
    ``root_path`` (service_root_path, the proxy's prefix) is set on every request, as FastAPI's own root_path
    would (that parameter is deprecated)."""

    def __init__(self, app: ASGIApp, trusted_hosts: str, root_path: str = "") -> None:
        from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

        self.app = app
        self.proxy = ProxyHeadersMiddleware(app, trusted_hosts)  # type: ignore[arg-type]
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.root_path:
            scope = {**scope, "root_path": self.root_path}
        peer = scope.get("client")
        if peer and peer[0] in self.proxy.trusted_hosts:
            forwarded = [v for k, v in scope["headers"] if k == b"x-forwarded-host"]
            host = forwarded[0].split(b",")[0].strip() if forwarded else b""
            if host:
                scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"host"]
                         + [(b"host", host)]}
        await self.proxy(scope, receive, send)  # type: ignore[arg-type]
