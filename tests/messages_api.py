"""A loopback HTTP server speaking the Anthropic Messages API, with scripted answers and a request log.

Tests drive it with the real `anthropic` SDK over real HTTP: nothing in the SDK is mocked.
A `Responder` maps a request body to a `Reply`; the server applies stop sequences the way the API
does (the answer is cut at the first one, which is reported and not included).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    text: str = ""
    status: int = 200
    error: dict[str, Any] | None = None  # the API's {"type", "message"} for a non-200 reply
    headers: dict[str, str] = field(default_factory=dict)
    thinking: str | None = None  # a thinking block sent before the text
    stop_reason: str | None = None  # force one (e.g. "max_tokens", "refusal")
    hang_s: float = 0.0  # wait this long before answering (a hung request)
    body: Any = None  # a 200 whose body is this JSON value instead of a Message (a broken proxy)


Responder = Callable[[dict[str, Any]], Reply]


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # socketserver's default backlog of 5 drops SYNs when 32 clients connect at once


class MessagesAPI:
    def __init__(self, responder: Responder, latency_s: float = 0.0, port: int = 0):
        self.responder = responder
        self.latency_s = latency_s  # added to every /v1/messages answer, as a remote API's would be
        self.requests: list[dict[str, Any]] = []
        self.keep_requests = True
        self.served = 0  # requests received, kept or not
        self.headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.batches: dict[str, dict[str, Any]] = {}  # id -> {"requests", "polls", "results"}
        self.polls_before_end = 2  # a batch reports "in_progress" this many times, then "ended"
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MessagesAPI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def count(self, kind: str | None = None) -> int:
        """Requests received; `kind` ("judge" or "generate") counts one kind only."""
        with self._lock:
            return sum(1 for r in self.requests if kind is None or request_kind(r) == kind)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.headers.clear()

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        reply = self.responder(body)
        if reply.hang_s:
            time.sleep(reply.hang_s)  # past the client's timeout: it has given up and will retry
        if reply.status != 200:
            return reply.status, {"type": "error", "error": reply.error or {"type": "api_error", "message": "error"}}, reply.headers
        if reply.body is not None:
            return 200, reply.body, reply.headers
        text, stop_reason, stop_sequence = reply.text, "end_turn", None
        for stop in body.get("stop_sequences") or []:
            if stop in text:
                text, stop_reason, stop_sequence = text.split(stop, 1)[0], "stop_sequence", stop
                break
        stop_reason = reply.stop_reason or stop_reason
        content = [{"type": "text", "text": text}]
        if reply.thinking is not None:
            content.insert(0, {"type": "thinking", "thinking": reply.thinking, "signature": "sig"})
        prompt_words = sum(len(str(m["content"]).split()) for m in body["messages"])
        message = {
            "id": f"msg_{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": {"input_tokens": prompt_words, "output_tokens": len(text.split())},
        }
        return 200, message, reply.headers

    def _create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        batch_id = f"msgbatch_{next(self._ids):06d}"
        results = []
        for item in body["requests"]:  # answered now, revealed when the batch ends; in reverse order
            status, payload, _ = self._answer(item["params"])
            result = {"type": "succeeded", "message": payload} if status == 200 else {"type": "errored", "error": payload}
            results.append({"custom_id": item["custom_id"], "result": result})
        self.batches[batch_id] = {"requests": body["requests"], "polls": 0, "results": results[::-1]}
        return self._batch(batch_id)

    def _batch(self, batch_id: str) -> dict[str, Any]:
        batch = self.batches[batch_id]
        ended = batch["polls"] > self.polls_before_end
        batch["polls"] += 1
        n = len(batch["requests"])
        done = sum(1 for r in batch["results"] if r["result"]["type"] == "succeeded") if ended else 0
        return {
            "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n, "succeeded": done, "errored": n - done if ended else 0, "canceled": 0, "expired": 0},
            "created_at": "2026-11-25T00:00:00Z", "expires_at": "2026-11-26T00:00:00Z",
            "ended_at": "2026-11-25T00:01:00Z" if ended else None, "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                path = self.path.split("?")[0]
                with api._lock:
                    api.served += 1
                    if path == "/v1/messages" and api.keep_requests:  # batch requests are kept in api.batches
                        api.requests.append(body)
                    if api.keep_requests:
                        api.headers.append({k.lower(): v for k, v in self.headers.items()})
                if path == "/v1/messages/batches":
                    self._send(200, json.dumps(api._create_batch(body)).encode())
                    return
                if path != "/v1/messages":
                    status, payload, headers = 404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}}, {}
                else:
                    if api.latency_s:
                        time.sleep(api.latency_s)
                    status, payload, headers = api._answer(body)
                try:
                    self._send(status, json.dumps(payload).encode(), headers)
                except OSError:  # the client gave up first (a hung request past its timeout)
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                parts = self.path.split("?")[0].strip("/").split("/")  # v1 messages batches <id> [results]
                with api._lock:
                    api.headers.append({k.lower(): v for k, v in self.headers.items()})
                if len(parts) == 4:
                    self._send(200, json.dumps(api._batch(parts[3])).encode())
                elif len(parts) == 5 and parts[4] == "results":
                    lines = "".join(json.dumps(r) + "\n" for r in api.batches[parts[3]]["results"])
                    self._send(200, lines.encode(), content_type="application/binary")
                else:
                    self._send(404, b"{}")

            def _send(self, status: int, data: bytes, headers: dict[str, str] | None = None, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler


REGEX_PROMPT = "Write AWS REGEX code"  # how every generation prompt for a regex case starts


def request_kind(body: dict[str, Any]) -> str:
    """Generation prompts start with the seed's "Write AWS ..."; anything else is a judge request."""
    return "generate" if prompt_of(body).startswith("Write AWS") else "judge"


def prompt_of(body: dict[str, Any]) -> str:
    return str(body["messages"][0]["content"])


# Code for the four seed cases (a model that follows the prefill writes it, then closes the fence).
SEED_ANSWERS = {
    "list_s3_buckets": 'import boto3\n\ndef list_s3_buckets():\n    s3 = boto3.client("s3")\n    return [b["Name"] for b in s3.list_buckets().get("Buckets", [])]\n',
    "upload_to_s3": 'import boto3\n\ndef upload_to_s3(file_path, bucket, key):\n    boto3.client("s3").upload_file(file_path, bucket, key)\n    return f"s3://{bucket}/{key}"\n',
    "my-data-bucket": '{\n  "Version": "2012-10-17",\n  "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"],\n    "Resource": "arn:aws:s3:::my-data-bucket/*"}]\n}\n',
    REGEX_PROMPT: "^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$\n",
}

GOOD_VERDICT = {"score": 9, "reasoning": "Correct and idiomatic.", "strengths": ["uses boto3"], "weaknesses": []}

# Models that answer a final assistant message with a 400, as the API does (the rest accept prefill).
REJECTS_PREFILL = ("claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-sonnet-4-6", "claude-sonnet-5",
                   "claude-opus-5", "claude-haiku-5-5", "claude-fable-5", "claude-new-")
PREFILL_400 = Reply(status=400, error={"type": "invalid_request_error", "message":
                    "This model does not support assistant message prefill. The conversation must end with a user message."})


def code_for(body: dict[str, Any]) -> str:
    prompt = prompt_of(body)
    return next((answer for needle, answer in SEED_ANSWERS.items() if needle in prompt), "print('hello')\n")


def shape(body: dict[str, Any], payload: str, structured: str | None = None) -> str:
    """The answer as the request asks for it: after a prefill, as structured output, or in prose."""
    last = body["messages"][-1]
    if last["role"] == "assistant":
        return payload + "```\nThat is the answer."
    if body.get("output_config"):
        return structured if structured is not None else payload
    return f"Here you go:\n```\n{payload}```\nAnything else?"


def seed_responder(verdict: dict[str, Any] | str = GOOD_VERDICT, thinking: str | None = None) -> Responder:
    """Code for the seed cases and `verdict` (a dict, or raw text) for every judge request, shaped by
    the request; models in REJECTS_PREFILL refuse a prefill with the API's 400."""

    def respond(body: dict[str, Any]) -> Reply:
        if body["messages"][-1]["role"] == "assistant" and body["model"].startswith(REJECTS_PREFILL):
            return PREFILL_400
        if request_kind(body) == "judge":
            text = verdict if isinstance(verdict, str) else json.dumps(verdict)
            return Reply(text=shape(body, text + "\n"), thinking=thinking)
        code = code_for(body)
        return Reply(text=shape(body, code, json.dumps({"code": code})), thinking=thinking)

    return respond


class Faults:
    """Wraps a responder so that a share of requests fail the ways a busy API fails: 429 with a
    retry-after, 529 overloaded, 500, or no answer before the client's timeout.

    Deterministic: whether attempt n of a given request fails depends only on the request and n, so
    two runs meet the same faults. `counts` tallies what was served.
    """

    KINDS = ("rate_limit", "overloaded", "server", "hang")

    def __init__(self, responder: Responder, rate: float, hang_s: float = 2.0, retry_after_s: float = 0.2):
        self.responder, self.rate, self.hang_s, self.retry_after_s = responder, rate, hang_s, retry_after_s
        self.counts: Counter[str] = Counter()
        self._attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Reply:
        key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] += 1
        draw = int(hashlib.sha256(f"{key}:{attempt}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        if draw >= self.rate:
            with self._lock:
                self.counts["ok"] += 1
            return self.responder(body)
        kind = self.KINDS[int(draw / self.rate * len(self.KINDS)) % len(self.KINDS)]
        with self._lock:
            self.counts[kind] += 1
        if kind == "rate_limit":
            return Reply(status=429, error={"type": "rate_limit_error", "message": "Rate limited"},
                         headers={"retry-after-ms": str(int(self.retry_after_s * 1000))})
        if kind == "overloaded":
            return Reply(status=529, error={"type": "overloaded_error", "message": "Overloaded"})
        if kind == "server":
            return Reply(status=500, error={"type": "api_error", "message": "Internal server error"})
        return Reply(hang_s=self.hang_s, status=500, error={"type": "api_error", "message": "answered too late"})

    @property
    def failures(self) -> int:
        return sum(n for kind, n in self.counts.items() if kind != "ok")


def synthetic_cases(n: int, executable: bool = False) -> list[dict[str, Any]]:
    """`n` small Python cases for scale runs: cheap, so the run measures the pipeline and its calls.
    `executable` gives each a test, so each also goes through the sandbox, as a real dataset's would."""
    cases = []
    for i in range(n):
        case = {
            "id": f"synthetic-{i:05d}",
            "task": f"Write a function `value_{i:05d}()` that takes no arguments and returns the integer {i}.",
            "format": "python",
            "expected": f"def value_{i:05d}():\n    return {i}\n",
            "solution_criteria": f"Defines value_{i:05d}() returning {i}.",
            "difficulty": ("easy", "medium", "hard")[i % 3],
        }
        if executable:
            case["tests"] = {"entry_point": f"value_{i:05d}", "check": f"def check(candidate):\n    assert candidate() == {i}\n", "aws": False}
        cases.append(case)
    return cases


def synthetic_responder() -> Responder:
    """The right function for a synthetic case (the expected code), and a good verdict, shaped by the request."""

    def respond(body: dict[str, Any]) -> Reply:
        if request_kind(body) == "judge":
            return Reply(text=shape(body, json.dumps(GOOD_VERDICT) + "\n"))
        name, number = _synthetic_target(prompt_of(body))
        code = f"def {name}():\n    return {number}\n"
        return Reply(text=shape(body, code, json.dumps({"code": code})))

    return respond


def _synthetic_target(prompt: str) -> tuple[str, str]:
    name = prompt.split("`", 2)[1].removesuffix("()")
    return name, name.rsplit("_", 1)[1].lstrip("0") or "0"


def main() -> None:
    """Serve the synthetic responder on loopback until killed (benchmarks run it as its own process)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--fault-rate", type=float, default=0.0)
    args = parser.parse_args()
    responder = Faults(synthetic_responder(), args.fault_rate) if args.fault_rate else synthetic_responder()
    server = MessagesAPI(responder, latency_s=args.latency_ms / 1000, port=args.port)
    server.keep_requests = False  # a 20,000-case run would hold 40,000 request bodies
    print(server.url, flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
