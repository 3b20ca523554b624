"""Back to the wire: a check's handler's altered parameters, its answers and its errors, as botocore
sends and parses them (botocore's own serializer and parser), for the AWS endpoint (aws_endpoint.py).

Runs in the endpoint process only: kept free of pydantic and the rest of the package.
"""

from __future__ import annotations

import datetime
import json
from typing import Any
from urllib.parse import urlencode

from codegen_eval.grading.aws_wire import protocol_of, service_model


def serialize(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    """botocore's own request for `params`: method, url_path, query_string, headers, body."""
    from botocore.serialize import create_serializer

    model = service_model(service)
    serialized = create_serializer(protocol_of(model), include_validation=False).serialize_to_request(params, model.operation_model(operation))
    body = serialized["body"]
    if isinstance(body, dict):  # query and EC2 serializers leave the form as a dict
        body = urlencode(body, doseq=True)
    serialized["body"] = body.encode() if isinstance(body, str) else (body or b"")
    query = serialized.get("query_string") or {}
    serialized["query_string"] = urlencode(query, doseq=True) if isinstance(query, dict) else str(query)
    return serialized


def parse_response(service: str, operation: str, status: int, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """The answer as botocore would hand it to the candidate, as plain data (timestamps as epoch seconds)."""
    from botocore.parsers import create_parser

    model = service_model(service)
    shape = model.operation_model(operation).output_shape
    parsed = create_parser(protocol_of(model)).parse({"status_code": status, "headers": headers, "body": body}, shape)
    parsed.pop("ResponseMetadata", None)
    return _to_plain(parsed)


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if hasattr(value, "read"):  # a streaming body
        return value.read()
    return value


def json_answer(service: str, answer: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    version = service_model(service).metadata.get("jsonVersion", "1.0")
    return 200, {"Content-Type": f"application/x-amz-json-{version}"}, json.dumps(answer).encode()


def error_answer(service: str, code: str, message: str, status: int) -> tuple[int, dict[str, str], bytes]:
    """An AWS error in the service's protocol, as botocore parses it into a ClientError with that code."""
    protocol = protocol_of(service_model(service))
    if protocol in ("json", "rest-json"):
        version = service_model(service).metadata.get("jsonVersion", "1.1")
        headers = {"Content-Type": f"application/x-amz-json-{version}", "x-amzn-ErrorType": code}
        return status, headers, json.dumps({"__type": code, "message": message}).encode()
    inner = f"<Code>{_xml_text(code)}</Code><Message>{_xml_text(message)}</Message>"
    if protocol == "rest-xml":
        return status, {"Content-Type": "application/xml"}, f"<Error>{inner}</Error>".encode()
    if protocol == "ec2":
        return status, {"Content-Type": "text/xml"}, f"<Response><Errors><Error>{inner}</Error></Errors></Response>".encode()
    return status, {"Content-Type": "text/xml"}, f"<ErrorResponse><Error><Type>Sender</Type>{inner}</Error></ErrorResponse>".encode()


def _xml_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
