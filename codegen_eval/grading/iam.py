"""IAM identity policies: grammar, and whether a policy allows a request.

Evaluation follows IAM's rules for a single identity policy: an explicit Deny wins, otherwise an
Allow is needed, otherwise the request is denied by default. Actions match case-insensitively,
resources case-sensitively, both with `*` and `?` wildcards; NotAction / NotResource match everything
but what they list. Conditions are evaluated against the probe's `context` (a key absent from the
context fails a positive operator and satisfies a negated one; `...IfExists` and `Null` as in IAM).
A policy is data, never code: all of this runs in-process.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from typing import Any, Literal

Decision = Literal["allow", "explicit_deny", "implicit_deny"]
STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal", "NotPrincipal"}
VERSIONS = {"2012-10-17", "2008-10-17"}


class UnsupportedCondition(ValueError):
    pass


def grammar_errors(policy: Any) -> list[str]:
    """What makes `policy` an invalid identity policy; empty when it is valid."""
    if not isinstance(policy, dict):
        return [f"a policy is a JSON object, not {type(policy).__name__}"]
    errors = [f"unknown top-level key {key!r}" for key in policy if key not in {"Version", "Id", "Statement"}]
    if policy.get("Version") not in VERSIONS:
        errors.append(f"Version must be \"2012-10-17\", got {policy.get('Version')!r}")
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        return [*errors, "Statement must be a non-empty list of statements"]
    for index, statement in enumerate(statements):
        errors.extend(f"Statement[{index}]: {e}" for e in _statement_errors(statement))
    return errors


def _statement_errors(st: Any) -> list[str]:
    if not isinstance(st, dict):
        return ["a statement is a JSON object"]
    errors = [f"unknown key {key!r}" for key in st if key not in STATEMENT_KEYS]
    if st.get("Effect") not in ("Allow", "Deny"):
        errors.append(f"Effect must be \"Allow\" or \"Deny\", got {st.get('Effect')!r}")
    for positive, negative, shape in (("Action", "NotAction", _is_action), ("Resource", "NotResource", _is_resource)):
        present = [key for key in (positive, negative) if key in st]
        if len(present) != 1:
            errors.append(f"exactly one of {positive} / {negative} is required")
            continue
        values = _as_list(st[present[0]])
        if not values or not all(isinstance(v, str) and shape(v) for v in values):
            errors.append(f"{present[0]} has an invalid value: {st[present[0]]!r}")
    if "Principal" in st or "NotPrincipal" in st:
        errors.append("Principal is not allowed in an identity policy")
    condition = st.get("Condition", {})
    if not isinstance(condition, dict) or not all(isinstance(v, dict) for v in condition.values()):
        errors.append("Condition must map operators to {key: value(s)}")
    return errors


def _is_action(value: str) -> bool:
    return value == "*" or re.fullmatch(r"[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+", value) is not None


def _is_resource(value: str) -> bool:
    return value == "*" or value.startswith("arn:")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(policy["Statement"])


def evaluate(policy: dict[str, Any], action: str, resource: str, context: dict[str, Any] | None = None) -> Decision:
    """The decision for one request. Raises UnsupportedCondition for an operator it does not know."""
    allowed = False
    for st in statements(policy):
        if not _matches(st, "Action", action, ignore_case=True) or not _matches(st, "Resource", resource, ignore_case=False):
            continue
        if not _conditions_hold(st.get("Condition", {}), context or {}):
            continue
        if st["Effect"] == "Deny":
            return "explicit_deny"
        allowed = True
    return "allow" if allowed else "implicit_deny"


def _matches(st: dict[str, Any], field: str, value: str, ignore_case: bool) -> bool:
    if field in st:
        return any(wildcard_match(p, value, ignore_case) for p in _as_list(st[field]))
    return not any(wildcard_match(p, value, ignore_case) for p in _as_list(st["Not" + field]))


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return _wildcard_regex(pattern, ignore_case).fullmatch(value) is not None


@lru_cache(maxsize=4096)
def _wildcard_regex(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _conditions_hold(condition: dict[str, Any], context: dict[str, Any]) -> bool:
    lowered = {k.lower(): v for k, v in context.items()}
    for operator, tests in condition.items():
        for key, expected in tests.items():
            if not _condition(operator, lowered.get(key.lower()), [str(v) for v in _as_list(expected)]):
                return False
    return True


def _condition(operator: str, actual: Any, expected: list[str]) -> bool:
    if operator == "Null":  # "true": the key must be absent
        return (actual is None) == (expected[0].lower() == "true")
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    negated = "Not" in base
    if actual is None:
        return if_exists or negated
    values = [str(v) for v in _as_list(actual)]
    compare = _comparator(base.replace("Not", "", 1) if negated else base)
    if qualifier == "ForAllValues":
        hits = all(any(compare(v, e) for e in expected) for v in values)
    else:
        hits = any(compare(v, e) for v in values for e in expected)
    return not hits if negated else hits


def _comparator(base: str):
    if base in ("StringEquals", "ArnEquals"):
        return lambda a, e: a == e
    if base == "StringEqualsIgnoreCase":
        return lambda a, e: a.lower() == e.lower()
    if base in ("StringLike", "ArnLike"):
        return lambda a, e: wildcard_match(e, a)
    if base == "Bool":
        return lambda a, e: a.lower() == e.lower()
    if base.startswith("Numeric"):
        op = {"NumericEquals": float.__eq__, "NumericLessThan": float.__lt__, "NumericLessThanEquals": float.__le__,
              "NumericGreaterThan": float.__gt__, "NumericGreaterThanEquals": float.__ge__}.get(base)
        if op:
            return lambda a, e: op(float(a), float(e))
    if base == "IpAddress":
        return lambda a, e: ipaddress.ip_address(a) in ipaddress.ip_network(e, strict=False)
    raise UnsupportedCondition(f"condition operator {base!r} is not supported")


def parliament_findings(policy_text: str) -> list[str]:
    """Parliament's audit of the policy (its action database is not current: advisory only)."""
    try:
        from parliament import analyze_policy_string
    except ImportError:
        return []
    try:
        analysed = analyze_policy_string(policy_text)
    except Exception as exc:  # noqa: BLE001 (a malformed policy can trip parliament itself)
        return [f"parliament could not analyse the policy: {type(exc).__name__}"]
    return [f"{f.issue}: {f.detail}" if f.detail else f.issue for f in analysed.findings]
