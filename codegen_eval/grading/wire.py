"""Plain data across the sandbox boundary: how a check and its candidate talk without sharing objects.

A candidate runs in a process of its own; the check that grades it calls it through a proxy, and every
argument and return value crosses as a frame of JSON with containers tagged by type. Only plain data
crosses (None, bool, int, float, str, bytes, list, tuple, dict, set, frozenset), checked by *exact* type:
a subclass of int whose `__eq__` always says yes is refused, not passed on. The decoder builds fresh
builtin objects from untrusted bytes and refuses anything malformed, too deep or too large, so nothing
the candidate sends can run code or lie in the check's process.

Kept free of pydantic and the rest of the package: it is imported by the sandbox's zygote.
"""

from __future__ import annotations

import base64
import json
import socket
import struct
from typing import Any

MAX_FRAME_BYTES = 16 << 20
MAX_DEPTH = 100
_LENGTH = struct.Struct(">I")
_SCALARS = (type(None), bool, int, float, str)
_TAGS = {list: "L", tuple: "T", set: "S", frozenset: "F"}
_BUILD = {"L": list, "T": tuple, "S": set, "F": frozenset}


class WireError(ValueError):
    """A value that may not cross, or a frame that is not well-formed plain data."""


def encode(value: Any, depth: int = 0) -> Any:
    """A JSON-able form of `value`; WireError names the first type that may not cross."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if kind in _SCALARS:
        return value
    if kind is bytes:
        return ["B", base64.b64encode(value).decode()]
    if kind in _TAGS:
        return [_TAGS[kind], [encode(v, depth + 1) for v in value]]
    if kind is dict:
        return ["D", [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]]
    raise WireError(f"a value of type {kind.__module__}.{kind.__qualname__} cannot be passed as plain data")


def decode(data: Any, depth: int = 0) -> Any:
    """The plain value a JSON-decoded frame stands for; WireError on anything else."""
    if depth > MAX_DEPTH:
        raise WireError(f"nested deeper than {MAX_DEPTH} levels")
    if type(data) in _SCALARS:
        return data
    if type(data) is not list or len(data) != 2 or type(data[0]) is not str:
        raise WireError("malformed value")
    tag, body = data
    if tag == "B" and type(body) is str:
        try:
            return base64.b64decode(body, validate=True)
        except ValueError as exc:
            raise WireError("malformed bytes") from exc
    if type(body) is not list:
        raise WireError("malformed container")
    if tag in _BUILD:
        try:
            return _BUILD[tag](decode(v, depth + 1) for v in body)
        except TypeError as exc:  # an unhashable member of a set
            raise WireError(f"malformed set: {exc}") from exc
    if tag == "D":
        pairs = []
        for pair in body:
            if type(pair) is not list or len(pair) != 2:
                raise WireError("malformed dict")
            pairs.append((decode(pair[0], depth + 1), decode(pair[1], depth + 1)))
        try:
            return dict(pairs)
        except TypeError as exc:
            raise WireError(f"malformed dict: {exc}") from exc
    raise WireError(f"unknown tag {tag!r}")


def send(sock: socket.socket, message: dict[str, Any]) -> None:
    """One frame: a 4-byte length, then the message as JSON."""
    body = json.dumps(message).encode()
    if len(body) > MAX_FRAME_BYTES:
        raise WireError(f"a message of {len(body)} bytes is over the {MAX_FRAME_BYTES} byte limit")
    sock.sendall(_LENGTH.pack(len(body)) + body)


def receive(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame's message, or None when the other side closed; WireError when malformed."""
    header = _read_exactly(sock, _LENGTH.size)
    if header is None:
        return None
    (size,) = _LENGTH.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise WireError(f"a frame of {size} bytes is over the {MAX_FRAME_BYTES} byte limit")
    body = _read_exactly(sock, size)
    if body is None:
        return None
    try:
        message = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise WireError("a frame that is not JSON") from exc
    if type(message) is not dict:
        raise WireError("a frame that is not an object")
    return message


def _read_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send_value(sock: socket.socket, value: dict[str, Any]) -> None:
    """One frame holding any plain value (bytes and sets included), tagged as `encode` tags it."""
    send(sock, {"v": encode(value)})


def receive_value(sock: socket.socket) -> dict[str, Any] | None:
    """The next frame's plain value (a dict), None when the other side closed; WireError when malformed."""
    message = receive(sock)
    if message is None:
        return None
    value = decode(message.get("v"))
    if type(value) is not dict:
        raise WireError("a frame that is not an object")
    return value
