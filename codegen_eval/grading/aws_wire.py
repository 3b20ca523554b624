"""AWS requests as AWS names them: decoded from the wire with botocore's service models, and back.

The AWS endpoint (aws_endpoint.py) records each request the candidate sends as
`{"service": "s3", "operation": "ListObjectsV2", "params": {"Bucket": ..., "MaxKeys": 4}}`, with
parameters under botocore's member names whatever protocol the service speaks (JSON, query, EC2,
REST-JSON, REST-XML), and uploads (blob members) by size and SHA-256, never by content. The way back
(a handler's altered parameters, answers, errors) is aws_answers.py. Only botocore's model is used.

Runs in the endpoint process only: kept free of pydantic and the rest of the package.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs

_CREDENTIAL = re.compile(r"Credential=[^/,\s]*/[^/,\s]*/[^/,\s]*/([^/,\s]+)/aws4_request")
MAX_TEXT = 4096  # a longer string parameter is kept as its size and hash, like a blob


@dataclass
class Request:
    """One HTTP request as it reached the endpoint."""

    method: str
    path: str  # URL-decoded, as WSGI gives it
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@lru_cache(maxsize=1)
def _session() -> Any:
    import botocore.session

    return botocore.session.get_session()


@lru_cache(maxsize=None)
def service_model(name: str) -> Any:
    return _session().get_service_model(name)


def protocol_of(model: Any) -> str:
    """The protocol botocore's client speaks for this service (of those the model lists, the one botocore
    prefers: CloudWatch's JSON, not its first-listed CBOR)."""
    return getattr(model, "resolved_protocol", None) or model.protocol


def service_of(request: Request, allowed: list[str]) -> str | None:
    """The service a request is for, from its SigV4 credential scope (cloudwatch signs as "monitoring",
    stepfunctions as "states"), else from a JSON target prefix; None when neither says."""
    found = _CREDENTIAL.search(request.headers.get("authorization", ""))
    if found:
        signing = found.group(1)
        for name in allowed:
            if service_model(name).signing_name == signing:
                return name
        return signing  # a service this case does not use: named by its signing name, not served
    target = request.headers.get("x-amz-target", "").split(".")[0]
    for name in allowed:
        if target and service_model(name).metadata.get("targetPrefix") == target:
            return name
    return None


_FORM = "application/x-www-form-urlencoded"
# Operations moto's dispatcher does not know and serves as another (GET ?torrent returns the object)
ANSWERED_AS_ANOTHER = {"s3": frozenset({"GetObjectTorrent"})}


def refusal(service: str, request: Request, host: str) -> str | None:
    """Why a request may not reach moto, or None. The record names the operation botocore's model finds in
    the request; moto finds its own (an `Action` in the URL before the JSON target, a form body, a
    virtual-host bucket, a gzip body). Requests where the two could differ are refused: botocore never
    sends them, so only a request written to disagree with its record is."""
    if request.headers.get("host", "").lower() not in (host, host.replace("127.0.0.1", "localhost")):
        return f"the Host header must be the endpoint's own address ({host}): no virtual-host addressing"
    encoding = {e.strip() for e in request.headers.get("content-encoding", "").lower().split(",") if e.strip()}
    if encoding - {"gzip", "aws-chunked", "identity"}:
        return f"unsupported Content-Encoding {request.headers.get('content-encoding')!r}"
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type.startswith("multipart/"):
        return "multipart bodies are not accepted (botocore never sends them)"
    protocol = protocol_of(service_model(service))
    query = parse_qs(request.query, keep_blank_values=True)
    # moto reads a body as form fields when the URL has no query, whatever its content type (an
    # `&Action=Scan&` inside a JSON string included); S3 alone reads only the URL.
    body_fields = parse_qs(_text_body(request), keep_blank_values=True) if protocol != "rest-xml" else {}
    actions = query.get("Action", []) + body_fields.get("Action", [])
    if protocol in ("query", "ec2"):
        if len(actions) != 1 or "x-amz-target" in request.headers:
            return "a query-protocol request names its operation once, as Action, and has no X-Amz-Target"
        if request.body and content_type != _FORM:
            return f"a query-protocol body must be {_FORM}"
        if request.query and request.body:
            return "a query-protocol request carries its parameters in the URL or in the body, not both"
        if any(len(values) > 1 for values in (body_fields if request.body else query).values()):
            return "a query-protocol parameter is given once"
        return None
    if actions:
        return f"{service} does not take an Action parameter: its operation is in the " + ("X-Amz-Target header" if protocol == "json" else "method and path")
    if protocol == "json" and (not request.headers.get("x-amz-target") or not content_type.startswith("application/x-amz-json")):
        return "a JSON-protocol request has an X-Amz-Target header and an application/x-amz-json body"
    if protocol != "json" and "x-amz-target" in request.headers:
        return f"{service} takes no X-Amz-Target header"
    return None


def _text_body(request: Request) -> str:
    return payload(request).decode("utf-8", "replace")


def payload(request: Request) -> bytes:
    """The body as the service reads it: gzip undone, aws-chunked framing removed."""
    body = request.body
    encoding = request.headers.get("content-encoding", "").lower()
    if "gzip" in encoding:
        try:
            body = gzip.decompress(body)
        except (OSError, EOFError):
            return body
    if "aws-chunked" in encoding:
        body = _unchunk(body)
    return body


def _unchunk(body: bytes) -> bytes:
    """aws-chunked framing: `<hex size>[;chunk-signature=...]\r\n<data>\r\n`, ..., a 0-size chunk, trailers."""
    data, position = bytearray(), 0
    while position < len(body):
        end = body.find(b"\r\n", position)
        if end < 0:
            break
        try:
            size = int(body[position:end].split(b";")[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        data += body[end + 2 : end + 2 + size]
        position = end + 2 + size + 2
    return bytes(data)


def decode(service: str, request: Request) -> tuple[str, dict[str, Any]]:
    """(operation name, parameters) of a request to `service`; ("", {...}) when no operation matches."""
    model = service_model(service)
    protocol = protocol_of(model)
    if protocol == "json":
        target = request.headers.get("x-amz-target", "")
        name = target.rsplit(".", 1)[-1]
        if name not in model.operation_names:
            return "", unknown(request)
        body = json.loads(payload(request) or b"{}")
        return name, _plain(body, model.operation_model(name).input_shape)
    if protocol in ("query", "ec2"):
        form = parse_qs(request.query, keep_blank_values=True)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == _FORM:
            form.update(parse_qs(_text_body(request), keep_blank_values=True))
        name = (form.get("Action") or [""])[0]
        if name not in model.operation_names:
            return "", unknown(request)
        shape = model.operation_model(name).input_shape
        return name, _from_query(shape, "", {k: v[0] for k, v in form.items()}, protocol == "ec2") or {} if shape else {}
    operation = _rest_operation(model, request)
    if operation is None:
        return "", unknown(request)
    return operation.name, _from_rest(operation, request, protocol)


def unknown(request: Request) -> dict[str, Any]:
    return {"method": request.method, "path": request.path[:MAX_TEXT], "query": request.query[:MAX_TEXT]}


# --- JSON and blobs -----------------------------------------------------------------------------------------


def _plain(value: Any, shape: Any) -> Any:
    """Parameters as plain data: blobs (base64 in JSON) and very long strings by size and hash."""
    if shape is None:
        return value
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        return {k: _plain(v, shape.members.get(k)) for k, v in value.items()}
    if kind == "list" and isinstance(value, list):
        return [_plain(v, shape.member) for v in value]
    if kind == "map" and isinstance(value, dict):
        return {k: _plain(v, shape.value) for k, v in value.items()}
    if kind == "blob" and isinstance(value, str):
        try:
            return digest(base64.b64decode(value))
        except ValueError:
            return digest(value.encode())
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return digest(value.encode())
    return value


def digest(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _scalar(text: str, shape: Any) -> Any:
    kind = shape.type_name
    try:
        if kind in ("integer", "long"):
            return int(text)
        if kind in ("float", "double"):
            return float(text)
    except ValueError:
        return text
    if kind == "boolean":
        return text.lower() == "true"
    if kind == "blob":
        try:
            return digest(base64.b64decode(text))
        except ValueError:
            return digest(text.encode())
    return text if len(text) <= MAX_TEXT else digest(text.encode())


# --- query and EC2 protocols ----------------------------------------------------------------------------------


def _query_name(name: str, shape: Any, ec2: bool) -> str:
    if ec2:
        return shape.serialization.get("queryName") or (shape.serialization.get("name", name)[:1].upper() + shape.serialization.get("name", name)[1:])
    return shape.serialization.get("name", name)


def _from_query(shape: Any, prefix: str, form: dict[str, str], ec2: bool) -> Any:
    """The inverse of botocore's QuerySerializer/EC2Serializer: flattened form fields to nested members."""
    kind = shape.type_name
    if kind == "structure":
        out = {}
        for name, member in shape.members.items():
            key = f"{prefix}.{_query_name(name, member, ec2)}" if prefix else _query_name(name, member, ec2)
            value = _from_query(member, key, form, ec2)
            if value is not None:
                out[name] = value
        return out if out or not prefix else None
    if kind == "list":
        if ec2 or shape.serialization.get("flattened"):
            base = prefix
        else:
            base = f"{prefix}.{shape.member.serialization.get('name', 'member')}"
        items = []
        for index in range(1, 10_000):
            item = _from_query(shape.member, f"{base}.{index}", form, ec2)
            if item is None:
                break
            items.append(item)
        if not items and prefix in form:  # an empty list is sent as "Prefix="
            return []
        return items or None
    if kind == "map":
        base = prefix if shape.serialization.get("flattened") else f"{prefix}.entry"
        key_name, value_name = shape.key.serialization.get("name", "key"), shape.value.serialization.get("name", "value")
        out = {}
        for index in range(1, 10_000):
            key = form.get(f"{base}.{index}.{key_name}")
            if key is None:
                break
            out[key] = _from_query(shape.value, f"{base}.{index}.{value_name}", form, ec2)
        return out or None
    return _scalar(form[prefix], shape) if prefix in form else None


# --- REST protocols -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _routes(service: str) -> list[tuple[str, str, re.Pattern[str], list[str], list[tuple[str, str]], int, list[str]]]:
    """(operation, method, path pattern, labels, required query pairs, literal length, required headers) for
    each REST operation: PutObject, CopyObject, UploadPart and UploadPartCopy share `PUT /{Bucket}/{Key+}`,
    and only their required headers (`x-amz-copy-source`) and query parameters tell them apart."""
    model = service_model(service)
    routes = []
    for name in model.operation_names:
        operation = model.operation_model(name)
        http = operation.http
        path, _, query = http.get("requestUri", "/").partition("?")
        labels, pattern, literal = [], "", 0
        for piece in re.split(r"(\{[^}]+\})", path):
            if piece.startswith("{"):
                label = piece[1:-1]
                greedy = label.endswith("+")
                labels.append(label.rstrip("+"))
                pattern += "(.+)" if greedy else "([^/]+)"
            else:
                pattern += re.escape(piece)
                literal += len(piece)
        required = [(k, v[0] if v else "") for k, v in parse_qs(query, keep_blank_values=True).items()]
        shape = operation.input_shape
        members = [shape.members[m] for m in shape.required_members] if shape is not None else []
        headers = [m.serialization.get("name", "").lower() for m in members if m.serialization.get("location") == "header"]
        # required query members (UploadPart's partNumber and uploadId) tell it from PutObject
        required += [(m.serialization.get("name", ""), "") for m in members if m.serialization.get("location") == "querystring"]
        routes.append((name, http.get("method", "GET"), re.compile(pattern.rstrip("/") + "/?"), labels, required, literal, headers))
    return routes


def _rest_operation(model: Any, request: Request) -> Any:
    query = parse_qs(request.query, keep_blank_values=True)
    best, best_rank = None, None
    for name, method, pattern, _labels, required, literal, headers in _routes(model.service_name):
        if method != request.method or not pattern.fullmatch(request.path):
            continue
        if any(key not in query or (value and query[key][0] != value) for key, value in required):
            continue
        if any(header not in request.headers for header in headers):
            continue
        rank = (len(required), len(headers), literal)
        if best_rank is None or rank > best_rank:
            best, best_rank = name, rank
    return model.operation_model(best) if best else None


def _from_rest(operation: Any, request: Request, protocol: str) -> dict[str, Any]:
    shape = operation.input_shape
    if shape is None:
        return {}
    route = next(r for r in _routes(operation.service_model.service_name) if r[0] == operation.name)
    labels = dict(zip(route[3], route[2].fullmatch(request.path).groups()))  # type: ignore[union-attr]
    query = parse_qs(request.query, keep_blank_values=True)
    params: dict[str, Any] = {}
    body_members = {}
    for name, member in shape.members.items():
        where, wire_name = member.serialization.get("location"), member.serialization.get("name", name)
        if where == "uri" and wire_name in labels:
            params[name] = _scalar(labels[wire_name], member)
        elif where == "querystring":
            if member.type_name == "list" and wire_name in query:
                params[name] = [_scalar(v, member.member) for v in query[wire_name]]
            elif member.type_name == "map":
                taken = {r[0] for r in route[4]} | {m.serialization.get("name") for m in shape.members.values()}
                extra = {k: v[0] for k, v in query.items() if k not in taken}
                if extra:
                    params[name] = extra
            elif wire_name in query:
                params[name] = _scalar(query[wire_name][0], member)
        elif where == "header" and wire_name.lower() in request.headers:
            params[name] = _scalar(request.headers[wire_name.lower()], member)
        elif where == "headers":
            start = wire_name.lower()
            found = {k[len(start):]: v for k, v in request.headers.items() if k.startswith(start)}
            if found:
                params[name] = found
        elif where is None:
            body_members[name] = member
    payload_name = shape.serialization.get("payload")
    body = payload(request)
    if payload_name:
        member = shape.members[payload_name]
        if member.type_name in ("blob", "string"):
            params[payload_name] = digest(body)
        elif body:
            params[payload_name] = _body(body, member, protocol)
    elif body_members and body:
        parsed = _body(body, shape, protocol)
        params.update({k: v for k, v in parsed.items() if k in body_members})
    return params


def _body(body: bytes, shape: Any, protocol: str) -> Any:
    if protocol == "rest-json":
        return _plain(json.loads(body), shape)
    return _from_xml(ET.fromstring(body), shape)


def _tag(element: ET.Element) -> str:
    return element.tag.rsplit("}", 1)[-1]


def _from_xml(element: ET.Element, shape: Any) -> Any:
    kind = shape.type_name
    if kind == "structure":
        out: dict[str, Any] = {}
        for name, member in shape.members.items():
            wire_name = member.serialization.get("name", name)
            children = [child for child in element if _tag(child) == wire_name]
            if member.type_name == "list" and member.serialization.get("flattened"):
                if children:
                    out[name] = [_from_xml(child, member.member) for child in children]
            elif children:
                out[name] = _from_xml(children[0], member)
        return out
    if kind == "list":
        return [_from_xml(child, shape.member) for child in element]
    if kind == "map":
        out = {}
        for entry in element:
            key = next((c.text or "" for c in entry if _tag(c) == shape.key.serialization.get("name", "key")), "")
            value = next((c for c in entry if _tag(c) == shape.value.serialization.get("name", "value")), None)
            out[key] = _from_xml(value, shape.value) if value is not None else None
        return out
    return _scalar(element.text or "", shape)
