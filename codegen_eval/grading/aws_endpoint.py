"""The AWS endpoint a candidate talks to: moto's server in a process (and uid) of its own.

It holds no result channel and no other job's descriptors: only its listening socket and a control
socket to the job's check. Everything it tells the check (the call record, forwarded answers) is plain
data that the check decodes as such, so code that ran inside moto could at worst lie about AWS, never
write a verdict.

- **Who is asking.** Each request is attributed to the uid that owns the client's socket, asked of the
  kernel (sock_diag) in the job's own network namespace: the candidate's requests, however
  sent (boto3, raw HTTP, another SDK), are recorded; the check's are not; anyone else is refused.
- **The record.** Every candidate request, in order of arrival, decoded the way AWS names it
  (aws_wire.py). Kept here, outside the candidate's process: the candidate cannot read, clear or forge it.
- **Handlers.** For operations the check registered (`aws.on`), the request waits while the check decides:
  forward it (as is or with altered parameters), answer it (JSON services), or fail it with an AWS error.
- **Only the case's services.** moto's apps for the services the case uses, nothing else: not moto's
  control plane (/moto-api: reset, seeded state, canned results), not services whose moto parsers load
  untrusted documents with unsafe loaders (CloudFormation templates through a YAML loader that builds
  Python objects).

moto is used through its server-mode WSGI apps (`moto.server.create_backend_app`, what `moto_server`
serves per service); this module is the only place that touches them.
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import queue
import re
import socket
import struct
import threading
from typing import Any, Callable
from urllib.parse import unquote

from codegen_eval.grading import aws_answers, aws_wire, wire

# Services whose moto backends parse untrusted documents with loaders that can build Python objects.
REFUSED_SERVICES = frozenset({"cloudformation"})
DECISION_TIMEOUT_S = 30.0
_CLIENT_CALL = re.compile(r"""\.(?:client|resource)\(\s*(?:service_name\s*=\s*)?['"]([a-z0-9-]+)['"]""")

StartResponse = Callable[..., Any]


# sock_diag (the netlink interface `ss` uses): an exact lookup of one TCP socket by its addresses, which
# reports the socket's owner. O(1), where reading /proc/net/tcp walks the host's whole table (~40 ms here).
_NETLINK_SOCK_DIAG, _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, _NLMSG_ERROR = 4, 20, 1, 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr
_REQUEST = struct.Struct("=BBBBI")  # inet_diag_req_v2, before its inet_diag_sockid
_SOCKID = struct.Struct(">HH16s16sI")  # ports, addresses (network order), interface; the cookie follows
_LOOPBACK = socket.inet_aton("127.0.0.1") + bytes(12)


def socket_owner(client_port: int, server_port: int) -> int | None:
    """The uid owning the TCP socket 127.0.0.1:client_port connected to 127.0.0.1:server_port in this network namespace."""
    sockid = _SOCKID.pack(client_port, server_port, _LOOPBACK, _LOOPBACK, 0) + struct.pack("=II", 0xFFFFFFFF, 0xFFFFFFFF)
    body = _REQUEST.pack(socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF) + sockid
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as diag:
        diag.sendall(_HEADER.pack(_HEADER.size + len(body), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0) + body)
        reply = diag.recv(4096)
    _length, kind, _flags, _seq, _pid = _HEADER.unpack_from(reply)
    if kind == _NLMSG_ERROR:
        return None
    # inet_diag_msg: family, state, timer, retrans (4 bytes), the sockid (48), expires, rqueue, wqueue, then uid
    return struct.unpack_from("=I", reply, _HEADER.size + 4 + 48 + 12)[0]


def services_used(*sources: str) -> list[str]:
    """The AWS services trusted code (a case's reference and check) creates clients or resources for."""
    found = {name for source in sources for name in _CLIENT_CALL.findall(source)}
    return sorted(found - REFUSED_SERVICES)


def backend_app(service: str) -> Any:
    from moto.server import create_backend_app

    return create_backend_app(service)


class Endpoint:
    """The WSGI app in front of moto's per-service apps, with the record and the check's handlers."""

    def __init__(self, apps: dict[str, Any], control: socket.socket, candidate_uid: int, check_uid: int):
        self.apps, self.control = apps, control
        self.candidate_uid, self.check_uid = candidate_uid, check_uid
        self.port = 0
        self.record: list[dict[str, Any]] = []
        self.handled: set[str] = set()
        self._pending: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()

    # --- HTTP ---------------------------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        body = _read_body(environ)
        request = aws_wire.Request(
            method=environ.get("REQUEST_METHOD", "GET"), path=environ.get("PATH_INFO", "/"), query=environ.get("QUERY_STRING", ""),
            headers={k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
            | {"content-type": environ.get("CONTENT_TYPE", "")},
            body=body,
        )
        who = self._owner(environ)
        if who not in (self.candidate_uid, self.check_uid):
            return _answer(start_response, 403, {"Content-Type": "text/plain"}, b"only the candidate and its check may use this endpoint\n")
        service = aws_wire.service_of(request, list(self.apps))
        if request.path.startswith("/moto-api"):  # never routed to moto's control plane; said plainly
            service = None
        if who == self.check_uid and service in self.apps:
            return self.apps[service](_environ_with_body(environ, body), start_response)
        refused = aws_wire.refusal(service, request, f"127.0.0.1:{self.port}") if service in self.apps else "not served"
        operation, params = "", aws_wire.unknown(request)
        if not refused:
            try:
                operation, params = aws_wire.decode(service, request)
            except Exception as exc:  # noqa: BLE001 (a malformed request is recorded as such; moto answers it)
                params = {"undecodable": f"{type(exc).__name__}: {exc}"[:300]}
        if not refused and operation in aws_wire.ANSWERED_AS_ANOTHER.get(service, ()):
            refused = f"moto answers {operation} as another operation: not served, so the record cannot misname it"
        if refused:
            params = {**aws_wire.unknown(request), "refused": refused}
            operation = ""
        if who == self.candidate_uid:
            with self._lock:
                self.record.append({"service": service or "", "operation": operation, "params": params})
        if service not in self.apps:
            text = f"this case's AWS endpoint does not serve {service or 'this request'}; it serves {', '.join(sorted(self.apps))}\n"
            return _answer(start_response, 403, {"Content-Type": "text/plain"}, text.encode())
        if refused:
            return _answer(start_response, *aws_answers.error_answer(service, "InvalidRequest", refused, 400))
        if operation and operation in self.handled:
            return _answer(start_response, *self._decide(service, operation, params, environ, body))
        return self.apps[service](_environ_with_body(environ, body), start_response)

    def _owner(self, environ: dict[str, Any]) -> int | None:
        """The uid owning the client's end of this connection, asked of the kernel for that one socket.
        Only 127.0.0.1 may connect: the look-up names that address, so a client bound to 127.0.0.2 on the
        check's port would otherwise be taken for the check."""
        if environ.get("REMOTE_ADDR") != "127.0.0.1":
            return None
        try:
            return socket_owner(int(environ.get("REMOTE_PORT", 0)), self.port)
        except (OSError, ValueError, struct.error):
            return None

    def _moto(self, service: str, environ: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes]:
        status: list[Any] = []

        def start(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            status[:] = [int(code.split()[0]), dict(headers)]

        chunks = self.apps[service](_environ_with_body(environ, body), start)
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return status[0], status[1], data

    # --- the check's handlers -----------------------------------------------------------------------

    def _decide(self, service: str, operation: str, params: dict[str, Any], environ: dict[str, Any], body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Ask the check what the candidate meets; forward to moto as often as the handler asks."""
        ident = next(self._ids)
        inbox: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending[ident] = inbox
        last: tuple[int, dict[str, str], bytes] | None = None
        try:
            self._send({"t": "intercept", "id": ident, "service": service, "operation": operation, "params": params})
            while True:
                try:
                    message = inbox.get(timeout=DECISION_TIMEOUT_S)
                except queue.Empty:
                    return aws_answers.error_answer(service, "InternalError", "the check's handler did not answer", 500)
                kind = message.get("t")
                if kind == "forward":
                    altered = message.get("params")
                    last = self._moto(service, *self._altered(service, operation, altered, environ, body)) if type(altered) is dict else self._moto(service, environ, body)
                    answer = aws_answers.parse_response(service, operation, *last)
                    self._send({"t": "forwarded", "id": ident, "status": last[0], "answer": answer})
                elif kind == "respond" and type(message.get("answer")) is dict:
                    return aws_answers.json_answer(service, message["answer"])
                elif kind == "error":
                    code, text, status = message.get("code"), message.get("message"), message.get("status")
                    return aws_answers.error_answer(service, str(code), str(text), status if type(status) is int else 400)
                else:  # "pass": the last forwarded answer, unchanged (or the request as sent)
                    return last if last is not None else self._moto(service, environ, body)
        finally:
            self._pending.pop(ident, None)

    def _altered(self, service: str, operation: str, params: dict[str, Any], environ: dict[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        """The request botocore would send for `params`, keeping the caller's host and credentials."""
        model = aws_wire.service_model(service).operation_model(operation)
        payload = model.input_shape.serialization.get("payload") if model.input_shape is not None else None
        if payload and isinstance(params.get(payload), dict) and "sha256" in params[payload]:
            params = {**params, payload: body}  # an upload recorded by its hash goes on with its own bytes
        request = aws_answers.serialize(service, operation, params)
        altered = {k: v for k, v in environ.items() if not k.startswith("HTTP_") or k in ("HTTP_HOST", "HTTP_AUTHORIZATION", "HTTP_USER_AGENT")}
        for name, value in request["headers"].items():
            key = name.upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                altered["CONTENT_TYPE"] = value
            else:
                altered[f"HTTP_{key}"] = value
        path = request["url_path"].partition("?")
        altered.update(REQUEST_METHOD=request["method"], PATH_INFO=unquote(path[0]), QUERY_STRING="&".join(q for q in (path[2], request["query_string"]) if q))
        return altered, request["body"]

    # --- the control socket -------------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            wire.send_value(self.control, message)

    def serve_control(self) -> None:
        """The check's requests: the record so far, a handler registered, a handler's decision. Returns at its hang-up."""
        while True:
            try:
                message = wire.receive_value(self.control)
            except (OSError, wire.WireError):
                return
            if message is None:
                return
            kind = message.get("t")
            if kind == "calls":
                with self._lock:
                    snapshot = list(self.record)
                self._send({"t": "calls", "calls": snapshot})
            elif kind == "on" and type(message.get("operation")) is str:
                self.handled.add(message["operation"])
                self._send({"t": "ok"})
            elif type(message.get("id")) is int and message["id"] in self._pending:
                self._pending[message["id"]].put(message)


def serve(listener: socket.socket, control: socket.socket, services: list[str], warm: dict[str, Any], candidate_uid: int, check_uid: int) -> None:
    """In the endpoint's process: answer HTTP on `listener` until the check hangs up the control socket."""
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    apps = {name: warm.get(name) or backend_app(name) for name in services if name not in REFUSED_SERVICES}
    endpoint = Endpoint(apps, control, candidate_uid, check_uid)
    endpoint.port = listener.getsockname()[1]
    server = make_server("127.0.0.1", endpoint.port, endpoint, threaded=True, fd=listener.fileno())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint.serve_control()
    os._exit(0)


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH") or ""
    if stream is None:
        return b""
    if length.isdigit():
        return stream.read(int(length))
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
        return stream.read()
    return b""


def _environ_with_body(environ: dict[str, Any], body: bytes) -> dict[str, Any]:
    return {**environ, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}


def _answer(start_response: StartResponse, status: int, headers: dict[str, str], body: bytes) -> list[bytes]:
    from http import HTTPStatus

    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    skip = {"content-length", "transfer-encoding", "connection"}
    start_response(f"{status} {reason}", [(k, v) for k, v in headers.items() if k.lower() not in skip] + [("Content-Length", str(len(body)))])
    return [body]
