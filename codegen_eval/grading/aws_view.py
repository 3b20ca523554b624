"""The check's view of how the candidate used AWS: the `aws` in `def check(candidate, aws):`.

- `aws.calls()`: the candidate's requests so far, in order, as
  `{"service": "s3", "operation": "ListObjectsV2", "params": {...}}` with botocore's member names
  (uploads by `{"size", "sha256"}`). The check's own requests are not in it.
- `aws.on(operation, handler)`: the candidate's requests for `operation` wait for
  `handler(params, forward)`, which may return `forward()` or `forward(altered_params)` (the answer, as
  plain data), return another answer (services that speak JSON), or raise `aws.Error(code, message,
  status)`. Handlers run here, in the check's process, never in the candidate's.

Everything comes from the AWS endpoint's process over a socket as plain data (wire.py): the record is
data the check validates, and nothing the candidate or moto does can run code here.
"""

from __future__ import annotations

import copy
import queue
import socket
import threading
import traceback
from collections.abc import Callable
from typing import Any

from codegen_eval.grading import wire

Handler = Callable[[dict[str, Any], Callable[..., dict[str, Any]]], Any]
REPLY_TIMEOUT_S = 30.0


class AwsError(Exception):
    """Raised by a handler: the candidate receives this AWS error (e.g. ThrottlingException, 400)."""

    def __init__(self, code: str, message: str = "", status: int = 400):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status = code, message, status


class Aws:
    """The check's `aws` parameter."""

    Error = AwsError

    def __init__(self, control: socket.socket):
        self._control = control
        self._send_lock = threading.Lock()
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._forwarded: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._handlers: dict[str, Handler] = {}
        self.failure: str | None = None  # a handler that failed (not by aws.Error): the check fails with it
        threading.Thread(target=self._listen, daemon=True).start()

    def calls(self) -> list[dict[str, Any]]:
        self._send({"t": "calls"})
        reply = self._reply()
        calls = reply.get("calls")
        if type(calls) is not list:
            raise RuntimeError("the AWS endpoint sent no call record")
        return [c for c in calls if type(c) is dict and type(c.get("operation")) is str and type(c.get("params")) is dict]

    def on(self, operation: str, handler: Handler) -> None:
        if not callable(handler):
            raise TypeError("aws.on(operation, handler): handler(params, forward) must be callable")
        self._handlers[operation] = handler
        self._send({"t": "on", "operation": operation})
        self._reply()

    # --- plumbing ---------------------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            wire.send_value(self._control, message)

    def _reply(self) -> dict[str, Any]:
        try:
            return self._replies.get(timeout=REPLY_TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError("the AWS endpoint did not answer") from None

    def _listen(self) -> None:
        while True:
            try:
                message = wire.receive_value(self._control)
            except (OSError, wire.WireError):
                return
            if message is None:
                return
            kind = message.get("t")
            if kind == "intercept" and type(message.get("id")) is int:
                self._forwarded[message["id"]] = queue.Queue()
                threading.Thread(target=self._handle, args=(message,), daemon=True).start()
            elif kind == "forwarded" and message.get("id") in self._forwarded:
                self._forwarded[message["id"]].put(message)
            else:
                self._replies.put(message)

    def _handle(self, message: dict[str, Any]) -> None:
        ident, operation = message["id"], str(message.get("operation"))
        handler = self._handlers.get(operation)
        params = message.get("params") if type(message.get("params")) is dict else {}
        forwarded: list[dict[str, Any]] = []  # snapshots of what forward() returned, to tell an altered answer

        def forward(altered: dict[str, Any] | None = None) -> dict[str, Any]:
            self._send({"t": "forward", "id": ident, "params": altered})
            try:
                reply = self._forwarded[ident].get(timeout=REPLY_TIMEOUT_S)
            except queue.Empty:
                raise RuntimeError("the AWS endpoint did not answer a forwarded request") from None
            answer = reply.get("answer") if type(reply.get("answer")) is dict else {}
            forwarded.append(copy.deepcopy(answer))
            return answer

        try:
            result = handler(dict(params), forward) if handler else None
        except AwsError as exc:
            self._send({"t": "error", "id": ident, "code": exc.code, "message": exc.message, "status": exc.status})
            return
        except BaseException as exc:  # noqa: BLE001 (the check's own handler failed: the check fails with it)
            self.failure = self.failure or f"the handler for {operation} raised {_last_line(exc)}"
            self._send({"t": "error", "id": ident, "code": "InternalError", "message": "the check's handler failed", "status": 500})
            return
        finally:
            self._forwarded.pop(ident, None)
        if result is None or (forwarded and result == forwarded[-1]):
            self._send({"t": "pass", "id": ident})
        elif type(result) is dict:
            self._send({"t": "respond", "id": ident, "answer": result})
        else:
            self.failure = self.failure or f"the handler for {operation} returned {type(result).__name__}, not an answer dict"
            self._send({"t": "error", "id": ident, "code": "InternalError", "message": "the check's handler failed", "status": 500})


def _last_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip().splitlines()[-1][:300]
