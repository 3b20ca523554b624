"""The zygote's protocol: frames of a length, a JSON header and raw sections (see zygote.py for why).

Kept free of pydantic and of the rest of the package (the zygote imports it).
"""

from __future__ import annotations

import json
import os
import struct
from typing import Any

METADATA = ("kind", "entry_point")  # the only text of a job the zygote reads as text
FRAME = struct.Struct(">I")


def encode_request(request_id: int, job: dict[str, Any], limits: dict[str, Any]) -> list[bytes]:
    """For the parent: a request frame. Every text field of the job but its metadata goes as a raw
    section, so the zygote never builds a string of it (lone surrogates survive: surrogatepass)."""
    sections = {k: v.encode("utf-8", "surrogatepass") for k, v in job.items() if isinstance(v, str) and k not in METADATA}
    meta = {k: v for k, v in job.items() if k not in sections}
    header = json.dumps({"id": request_id, "limits": limits, "job": meta, "sections": [[k, len(v)] for k, v in sections.items()]}).encode()
    return [FRAME.pack(len(header)), header, *sections.values()]


def _read_exactly(fd: int, buffer: bytearray | memoryview) -> bool:
    view, done = memoryview(buffer), 0
    while done < len(view):
        n = os.readv(fd, [view[done:]])
        if n == 0:
            return False
        done += n
    return True


def read_request(fd: int) -> dict[str, Any] | None:
    """The next request, its sections as bytearrays read straight from the pipe; None at end of input."""
    size = bytearray(FRAME.size)
    if not _read_exactly(fd, size):
        return None
    header = bytearray(FRAME.unpack(size)[0])
    if not _read_exactly(fd, header):
        return None
    request = json.loads(header)
    for name, length in request.pop("sections"):
        buffer = bytearray(length)
        if not _read_exactly(fd, buffer):
            return None
        request["job"][name] = buffer
    return request


def write_frame(fd: int, header: dict[str, Any], payload: memoryview | bytes = b"") -> None:
    """A reply: a JSON header (the request's id, the zygote's own findings) and the job's result, raw."""
    data = json.dumps({**header, "payload": len(payload)}).encode()
    parts = [memoryview(FRAME.pack(len(data)) + data), memoryview(payload)]
    while parts:
        n = os.writev(fd, parts)
        while parts and n >= len(parts[0]):
            n -= len(parts[0])
            parts.pop(0)
        if parts and n:
            parts[0] = parts[0][n:]
