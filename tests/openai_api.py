"""A loopback stand-in for an OpenAI-compatible server, for the failure paths only.

What a model answers is tested against a real server (`tests/llama_server.py`); this one exists to
fail on cue, which a real server will not: 429 with retry-after, 5xx, hangs past the timeout, and a
server that refuses `response_format` or a continued assistant message. Tests drive it with the real
`openai` SDK over real HTTP. Each request is answered by the next scripted `Reply`, then by `default`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = "```python\ndef answer():\n    return 42\n```"
    status: int = 200
    message: str = ""  # the error message of a non-200 reply
    headers: dict[str, str] = field(default_factory=dict)
    hang_s: float = 0.0  # wait this long before answering (a hung request)
    finish_reason: str = "stop"


Responder = Callable[[dict[str, Any]], Reply | None]  # None: the next scripted reply, or the default


def refuses_response_format(body: dict[str, Any]) -> Reply | None:
    """Like a server without structured outputs: a 400 for any `response_format`."""
    if "response_format" in body:
        return Reply(status=400, message="Invalid parameter: 'response_format' of type 'json_schema' is not supported with this model.")
    return None


def refuses_prefill(body: dict[str, Any]) -> Reply | None:
    """Like OpenAI's own API: unknown request fields are a 400."""
    if "continue_final_message" in body:
        return Reply(status=400, message="Unrecognized request argument supplied: continue_final_message")
    return None


class OpenAIAPI:
    def __init__(self, default: Reply | None = None, responder: Responder | None = None):
        self.default = default or Reply()
        self.responder = responder
        self.script: list[Reply] = []
        self.requests: list[dict[str, Any]] = []  # bodies, in arrival order
        self.arrivals: list[float] = []  # time.monotonic() of each request
        self.headers: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> OpenAIAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self.requests.append(body)
            self.arrivals.append(time.monotonic())
            chosen = self.responder(body) if self.responder else None
            if chosen is None and self.script:
                chosen = self.script.pop(0)
            return chosen or self.default

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                with api._lock:
                    api.headers.append(dict(self.headers))
                reply = api._reply(body)
                if reply.hang_s:
                    time.sleep(reply.hang_s)
                if reply.status == 200:
                    prompt = sum(len(str(m.get("content", ""))) for m in body.get("messages", [])) // 4
                    payload: dict[str, Any] = {
                        "id": f"chatcmpl-{len(api.requests)}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", ""),
                        "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                                     "message": {"role": "assistant", "content": reply.text}}],
                        "usage": {"prompt_tokens": prompt, "completion_tokens": len(reply.text) // 4,
                                  "total_tokens": prompt + len(reply.text) // 4},
                    }
                else:
                    payload = {"error": {"message": reply.message or f"status {reply.status}", "type": "error", "code": None}}
                data = json.dumps(payload).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on a hung request
                    pass

        return Handler
