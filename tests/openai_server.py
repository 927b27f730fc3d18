"""A small OpenAI-compatible chat-completions server for tests: a real HTTP server on 127.0.0.1 (a free
port), in a thread, that answers ``POST /v1/chat/completions`` with a canned reply, as one JSON body or as
server-sent events (``stream: true``), and can be told to fail its next calls first.

    with OpenAIServer(reply="Capex was $1,577 million [1].") as server:
        server.fail_next(1, status=503)
        ... OpenAIChatGenerator(server.base_url, "test-model") ...
        server.requests  # the JSON bodies received, failed ones included
"""
from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

PATH = "/v1/chat/completions"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (after an error answer, or at the end of a test) is not a server error."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


class OpenAIServer:
    def __init__(self, reply: str = "The answer [1].", chunk_words: int = 2) -> None:
        self.reply, self.chunk_words = reply, chunk_words
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self._failures: list[tuple[int, dict[str, str], dict]] = []
        self._lock = threading.Lock()
        self._httpd = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def fail_next(self, times: int, status: int = 503, headers: dict[str, str] | None = None,
                  message: str = "overloaded") -> None:
        """Answer the next ``times`` requests with ``status`` and an OpenAI-style error body."""
        with self._lock:
            self._failures += [(status, headers or {}, {"error": {"message": message, "type": "test"}})] * times

    def pieces(self) -> list[str]:
        """The reply cut into the stream's deltas (``chunk_words`` words each, spaces kept)."""
        words = self.reply.split(" ")
        return [" ".join(words[i:i + self.chunk_words]) + (" " if i + self.chunk_words < len(words) else "")
                for i in range(0, len(words), self.chunk_words)]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_failure(self) -> tuple[int, dict[str, str], dict] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.requests.append(body)
                server.headers.append(dict(self.headers))
                if self.path != PATH:
                    self._send(404, b'{"error": {"message": "no such route"}}', "application/json", {})
                    return
                failure = server._next_failure()
                if failure:
                    status, headers, error = failure
                    self._send(status, json.dumps(error).encode(), "application/json", headers)
                    return
                if body.get("stream"):
                    self._stream(body)
                else:
                    message = {"role": "assistant", "content": server.reply}
                    reply = {"id": "cmpl-1", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
                    self._send(200, json.dumps(reply).encode(), "application/json", {})

            def _stream(self, body: dict) -> None:
                """Server-sent events, one HTTP chunk each, flushed as they go (chunked transfer encoding)."""
                events = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
                events += [{"choices": [{"index": 0, "delta": {"content": p}}]} for p in server.pieces()]
                events += [{"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                lines = [": keep-alive\n\n"] + [f"data: {json.dumps({'model': body.get('model'), **e})}\n\n"
                                                  for e in events] + ["data: [DONE]\n\n"]
                for line in lines:
                    data = line.encode()
                    self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")

        return Handler
