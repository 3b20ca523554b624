"""IAM policies: grammar, and whether one policy allows a request, with IAM's documented rules.

Three kinds of policy: an identity policy (no Principal), an S3 bucket policy and a role trust policy
(resource-based: a Principal or NotPrincipal says whom a statement is about; a trust policy has no
Resource). One policy is evaluated on its own: an explicit Deny wins, otherwise an Allow is needed,
otherwise the request is denied by default. A cross-account request would also need the caller's
own identity policy; that is outside one policy and not modelled.

Matching: actions case-insensitively, resources case-sensitively, both with `*` and `?`; NotAction /
NotResource match everything but what they list. Conditions are checked against the request's
`context` (IfExists, Null, ForAllValues / ForAnyValue, String, Numeric, Date, Bool, IpAddress, Arn).
Under Version 2012-10-17, policy variables (`${aws:username}`, `${aws:PrincipalTag/team}`, any key,
a default `${key, 'value'}`, the escapes `${*}` `${?}` `${$}`) are taken from the context in the
resource part of an ARN and in String, Arn and Bool condition values; under 2008-10-17 they are
literal text. A value a variable takes from the request is literal, never a wildcard. A variable
with no value makes its Resource / NotResource entry match nothing and drops its condition value
(so StringEquals fails and StringNotEquals holds), as the IAM User Guide says. A policy is data,
never code: all of this runs in-process.
"""

from __future__ import annotations

import ipaddress
import re
import reprlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from codegen_eval.grading.wildcards import Tokens, glob_match

Decision = Literal["allow", "explicit_deny", "implicit_deny"]
PolicyType = Literal["identity", "bucket", "trust"]
# A request's principal: ("AWS", arn or account id), ("Service", "lambda.amazonaws.com"),
# ("Federated", provider), ("CanonicalUser", id), or ("anonymous", "").
Principal = tuple[str, str]
ANONYMOUS: Principal = ("anonymous", "")

STATEMENT_KEYS = {"Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition", "Principal", "NotPrincipal"}
VERSIONS = {"2012-10-17", "2008-10-17"}
VARIABLES_VERSION = "2012-10-17"
PRINCIPAL_TYPES = {"AWS", "Service", "Federated", "CanonicalUser"}
_OPERATORS = {
    "StringEquals", "StringNotEquals", "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase", "StringLike", "StringNotLike",
    "NumericEquals", "NumericNotEquals", "NumericLessThan", "NumericLessThanEquals", "NumericGreaterThan", "NumericGreaterThanEquals",
    "DateEquals", "DateNotEquals", "DateLessThan", "DateLessThanEquals", "DateGreaterThan", "DateGreaterThanEquals",
    "Bool", "BinaryEquals", "IpAddress", "NotIpAddress", "ArnEquals", "ArnLike", "ArnNotEquals", "ArnNotLike", "Null",
}
_ACCOUNT = re.compile(r"\d{12}")
_AWS_PRINCIPAL_ARN = re.compile(r"arn:aws[a-z-]*:(iam|sts)::(\d{12}):(.+)")


class UnsupportedCondition(ValueError):
    pass


_BRIEF = reprlib.Repr()
_BRIEF.maxlevel, _BRIEF.maxstring, _BRIEF.maxother, _BRIEF.maxlist, _BRIEF.maxdict = 3, 80, 80, 4, 4


def brief(value: Any) -> str:
    """A short repr of policy data for a message: bounded in length and depth, whatever the model wrote."""
    return _BRIEF.repr(value)


# --- grammar --------------------------------------------------------------------------------------------


def grammar_errors(policy: Any, policy_type: PolicyType = "identity") -> list[str]:
    """What makes `policy` an invalid policy of this type; empty when it is valid."""
    if not isinstance(policy, dict):
        return [f"a policy is a JSON object, not {type(policy).__name__}"]
    errors = [f"unknown top-level key {brief(key)}" for key in policy if key not in {"Version", "Id", "Statement"}]
    if policy.get("Version") not in VERSIONS:
        errors.append(f"Version must be \"2012-10-17\", got {brief(policy.get('Version'))}")
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        statements = [statements]
    if not isinstance(statements, list) or not statements:
        return [*errors, "Statement must be a non-empty list of statements"]
    for index, statement in enumerate(statements):
        errors.extend(f"Statement[{index}]: {e}" for e in _statement_errors(statement, policy_type))
    return errors


def _statement_errors(st: Any, policy_type: PolicyType) -> list[str]:
    if not isinstance(st, dict):
        return ["a statement is a JSON object"]
    errors = [f"unknown key {brief(key)}" for key in st if key not in STATEMENT_KEYS]
    errors += _sid_errors(st, policy_type)
    if st.get("Effect") not in ("Allow", "Deny"):
        errors.append(f"Effect must be \"Allow\" or \"Deny\", got {brief(st.get('Effect'))}")
    errors += _pair_errors(st, "Action", "NotAction", _action_shape(policy_type))
    if policy_type == "trust":
        # IAM refuses such a trust policy: "MalformedPolicyDocument: Has prohibited field Resource".
        errors += [f"{key} is not allowed in a role trust policy" for key in ("Resource", "NotResource") if key in st]
    else:
        errors += _pair_errors(st, "Resource", "NotResource", _is_s3_resource if policy_type == "bucket" else _is_resource)
    if policy_type == "identity":
        if "Principal" in st or "NotPrincipal" in st:
            errors.append("Principal is not allowed in an identity policy")
    else:
        present = [key for key in ("Principal", "NotPrincipal") if key in st]
        if len(present) != 1:
            errors.append(f"exactly one of Principal / NotPrincipal is required in a {_KIND_NAMES[policy_type]}")
        else:
            errors += _principal_errors(present[0], st[present[0]])
    errors += _condition_errors(st.get("Condition", {}))
    return errors


def _sid_errors(st: dict[str, Any], policy_type: PolicyType) -> list[str]:
    """IAM: "The Sid element supports ASCII uppercase letters (A-Z), lowercase letters (a-z), and numbers
    (0-9)" (identity and trust policies live in IAM). S3 takes any string: its own examples use spaces."""
    if "Sid" not in st:
        return []
    sid = st["Sid"]
    if not isinstance(sid, str):
        return [f"Sid must be a string, got {brief(sid)}"]
    if policy_type != "bucket" and not (sid.isascii() and (sid.isalnum() or not sid)):
        return [f"Sid {brief(sid)}: IAM takes only the letters A-Z, a-z and digits 0-9"]
    return []


_KIND_NAMES = {"identity": "identity policy", "bucket": "bucket policy", "trust": "role trust policy"}


def _pair_errors(st: dict[str, Any], positive: str, negative: str, shape: Callable[[str], bool]) -> list[str]:
    present = [key for key in (positive, negative) if key in st]
    if len(present) != 1:
        return [f"exactly one of {positive} / {negative} is required"]
    values = _as_list(st[present[0]])
    if not values or not all(isinstance(v, str) and shape(v) for v in values):
        return [f"{present[0]} has an invalid value: {brief(st[present[0]])}"]
    return []


def _action_shape(policy_type: PolicyType) -> Callable[[str], bool]:
    if policy_type == "trust":  # a trust policy governs assuming the role: sts actions only
        return lambda v: v == "*" or (_is_action(v) and v.lower().startswith("sts:"))
    return _is_action


def _is_action(value: str) -> bool:
    return value == "*" or re.fullmatch(r"[a-zA-Z0-9-]+:[a-zA-Z0-9*?]+", value) is not None


def _is_resource(value: str) -> bool:
    return value == "*" or value.startswith("arn:")


def _is_s3_resource(value: str) -> bool:
    return value.startswith("arn:aws:s3:::")  # a bucket policy covers its bucket and objects only


def _principal_errors(key: str, block: Any) -> list[str]:
    if block == "*":
        return []
    if not isinstance(block, dict) or not block:
        return [f"{key} must be \"*\" or an object such as {{\"AWS\": ...}} or {{\"Service\": ...}}"]
    errors = [f"{key} has an unknown principal type {brief(kind)}" for kind in block if kind not in PRINCIPAL_TYPES]
    for kind, values in block.items():
        values = _as_list(values)
        if not values or not all(isinstance(v, str) and v for v in values):
            errors.append(f"{key}.{kind} must be a string or a list of strings")
            continue
        for value in values:
            if kind == "AWS" and not (value == "*" or _ACCOUNT.fullmatch(value) or _AWS_PRINCIPAL_ARN.fullmatch(value)):
                errors.append(f"{key}.AWS {brief(value)} is not an account id, an IAM/STS ARN or \"*\"")
            elif value != "*" and ("*" in value or "?" in value):
                # "You cannot use a wildcard to match part of a principal name or ARN."
                errors.append(f"{key}.{kind} {brief(value)}: a wildcard cannot match part of a principal")
    return errors


def _condition_errors(condition: Any) -> list[str]:
    if not isinstance(condition, dict) or not all(isinstance(v, dict) for v in condition.values()):
        return ["Condition must map operators to {key: value(s)}"]
    errors = []
    for operator, tests in condition.items():
        qualifier, base, _ = _split_operator(operator)
        if qualifier not in ("", "ForAllValues", "ForAnyValue") or base not in _OPERATORS:
            errors.append(f"unknown condition operator {brief(operator)}")
            continue
        for key, values in tests.items():
            for value in _as_list(values):
                text = _condition_text(value)
                if text is None:
                    errors.append(f"Condition {operator} {key}: {brief(value)} is not a string")
                elif base.startswith("Date") and parse_date(text) is None:
                    errors.append(f"Condition {operator} {key}: {brief(text)} is not an ISO 8601 date or epoch seconds")
                elif base.startswith("Numeric") and _number(text) is None:
                    errors.append(f"Condition {operator} {key}: {brief(text)} is not a number")
                elif base.endswith("IpAddress") and _network(text) is None:
                    errors.append(f"Condition {operator} {key}: {brief(text)} is not an IP address or CIDR block")
    return errors


# --- evaluation -----------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return _as_list(policy["Statement"])


def evaluate(
    policy: dict[str, Any],
    action: str,
    resource: str | None = None,
    context: Mapping[str, Any] | None = None,
    principal: Principal | None = None,
) -> Decision:
    """The decision for one request. `principal` matters for resource-based policies only;
    `resource` may be None for a trust policy (its statements have no Resource)."""
    variables = policy.get("Version") == VARIABLES_VERSION
    keys = _request_context(context or {}, principal)
    chain = principal_chain(principal or ANONYMOUS)
    allowed = False
    for st in statements(policy):
        if not _principal_applies(st, chain) or not _matches(st, "Action", action, ignore_case=True, context=None):
            continue
        if ("Resource" in st or "NotResource" in st) and (
            resource is None or not _matches(st, "Resource", resource, ignore_case=False, context=keys if variables else None)
        ):
            continue
        if not _conditions_hold(st.get("Condition", {}), keys, variables):
            continue
        if st["Effect"] == "Deny":
            return "explicit_deny"
        allowed = True
    return "allow" if allowed else "implicit_deny"


def _request_context(context: Mapping[str, Any], principal: Principal | None) -> dict[str, Any]:
    """Context keys by lower-cased name (key names are case-insensitive). An AWS principal also
    supplies aws:PrincipalAccount and aws:PrincipalArn (a role session's is its role's ARN), unless
    the context gives them."""
    keys = {}
    chain = principal_chain(principal) if principal and principal[0] == "AWS" else []
    if chain and _AWS_PRINCIPAL_ARN.fullmatch(chain[0][1]):
        keys["aws:principalaccount"] = chain[0][1].split(":")[4]
        keys["aws:principalarn"] = chain[min(1, len(chain) - 1)][1]
    keys.update({k.lower(): v for k, v in context.items()})
    return keys


def _matches(st: dict[str, Any], field: str, value: str, ignore_case: bool, context: dict[str, Any] | None) -> bool:
    """Whether Action/Resource (or NotAction/NotResource) covers `value`. With a `context`,
    variables in the resource part of an ARN are resolved; an entry whose variable has no value
    matches nothing, so a NotResource entry like that excludes nothing."""
    patterns = _as_list(st[field] if field in st else st["Not" + field])
    hit = any(_entry_matches(p, value, ignore_case, context) for p in patterns)
    return hit if field in st else not hit


def _entry_matches(pattern: str, value: str, ignore_case: bool, context: dict[str, Any] | None) -> bool:
    if context is None or "${" not in pattern:
        return wildcard_match(pattern, value, ignore_case)
    # "only in the resource portion of the ARN ... after the fifth colon"
    head, sep, tail = _after_fifth_colon(pattern)
    tokens = resolve_variables(tail, context)
    if tokens is None:
        return False
    return glob_match(((True, head + sep), *tokens), value, ignore_case)


def _after_fifth_colon(arn: str) -> tuple[str, str, str]:
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return arn, "", ""
    return ":".join(parts[:5]), ":", parts[5]


def wildcard_match(pattern: str, value: str, ignore_case: bool = False) -> bool:
    return glob_match(((True, pattern),), value, ignore_case)


def resolve_variables(text: str, context: Mapping[str, Any]) -> Tokens | None:
    """`text` with its policy variables replaced from `context` (lower-cased keys); None when one
    has no value and no default (a missing key, or a multivalued one). One pass, no regex: policy text
    comes from the model, and a backtracking pattern over it could run for minutes."""
    pieces: list[tuple[bool, str]] = []
    pos = 0
    while (start := text.find("${", pos)) >= 0 and (end := text.find("}", start + 2)) >= 0:
        pieces.append((True, text[pos:start]))
        pos = end + 1
        body = text[start + 2:end]
        if body in ("*", "?", "$"):
            pieces.append((False, body))
            continue
        parsed = _variable_body(body)
        if parsed is None:
            return None
        key, default = parsed
        value = context.get(key.lower())
        if isinstance(value, str):
            pieces.append((False, value))
        elif default is not None:
            pieces.append((False, default))
        else:
            return None
    pieces.append((True, text[pos:]))
    return tuple(p for p in pieces if p[1])


def _variable_body(body: str) -> tuple[str, str | None] | None:
    """`key` or `key, 'default'` (a quote doubled inside the default), spaces allowed around each;
    None when the body is neither."""
    key, comma, rest = body.partition(",")
    key = key.strip()
    if not key or "'" in key:
        return None
    if not comma:
        return key, None
    rest = rest.strip()
    inner = rest[1:-1]
    if len(rest) < 2 or rest[0] != "'" or rest[-1] != "'" or "'" in inner.replace("''", ""):
        return None
    return key, inner.replace("''", "'")


def _text(tokens: Tokens) -> str:
    return "".join(text for _, text in tokens)


# --- principals -----------------------------------------------------------------------------------------


def principal_chain(principal: Principal) -> list[Principal]:
    """The identities a request is made as, outermost first: an IAM user is its account and itself;
    a role session its account, its role and itself. AWS "might validate the account first, then
    the role, and then the assumed-role user" (NotPrincipal page)."""
    kind, value = principal
    if kind != "AWS":
        return [principal]
    if _ACCOUNT.fullmatch(value):
        return [("AWS", f"arn:aws:iam::{value}:root")]
    parsed = _AWS_PRINCIPAL_ARN.fullmatch(value)
    if parsed is None:
        return [principal]
    service, account, rest = parsed.groups()
    root = ("AWS", f"arn:aws:iam::{account}:root")
    if rest == "root":
        return [root]
    if service == "sts" and rest.startswith("assumed-role/") and rest.count("/") >= 2:
        role = rest.split("/")[1]
        return [root, ("AWS", f"arn:aws:iam::{account}:role/{role}"), principal]
    return [root, principal]


def _principal_applies(st: dict[str, Any], chain: list[Principal]) -> bool:
    if "Principal" in st:
        return any(_listed(st["Principal"], identity) for identity in chain)
    if "NotPrincipal" in st:
        listed = [_listed(st["NotPrincipal"], identity) for identity in chain]
        # With Deny, everyone is denied but a principal whose account (and role) are listed too;
        # with Allow, everyone is allowed but the listed ones and their members, anonymous included.
        return not all(listed) if st["Effect"] == "Deny" else not any(listed)
    return True


def _listed(block: Any, identity: Principal) -> bool:
    if block == "*" or (isinstance(block, dict) and "*" in _as_list(block.get("AWS", []))):
        return True  # "Principal": "*" and {"AWS": "*"} are the same: everyone, anonymous included
    if not isinstance(block, dict) or identity == ANONYMOUS:
        return False
    kind, value = identity
    return any(_same_principal(kind, str(listed), value) for listed in _as_list(block.get(kind, [])))


def _same_principal(kind: str, listed: str, value: str) -> bool:
    if kind != "AWS":
        return listed == value
    listed = principal_chain(("AWS", listed))[-1][1]
    if listed == value:
        return True
    # A role is named by account and name; its ARN's path is not part of a session's ARN.
    role = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/(?:.*/)?([^/]+)")
    a, b = role.fullmatch(listed), role.fullmatch(value)
    return bool(a and b and a.groups() == b.groups())


# --- conditions -----------------------------------------------------------------------------------------


def _split_operator(operator: str) -> tuple[str, str, bool]:
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists") and base != "IfExists"
    return qualifier, base.removesuffix("IfExists") if if_exists else base, if_exists


def _condition_text(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    return None


def _conditions_hold(condition: dict[str, Any], context: dict[str, Any], variables: bool) -> bool:
    for operator, tests in condition.items():
        for key, expected in tests.items():
            texts = [t for t in (_condition_text(v) for v in _as_list(expected)) if t is not None]
            if not _condition(operator, context.get(key.lower()), texts, context if variables else None):
                return False
    return True


def _condition(operator: str, actual: Any, expected: list[str], context: dict[str, Any] | None) -> bool:
    qualifier, base, if_exists = _split_operator(operator)
    if base == "Null":  # "true": the key must be absent (no value at all decides nothing: it fails)
        return bool(expected) and (actual is None) == (expected[0].lower() == "true")
    negated = base.startswith(("StringNot", "NumericNot", "DateNot", "ArnNot", "NotIp"))
    if actual is None:
        # A missing key: IfExists passes; ForAllValues holds ("also returns true if there are no
        # context keys"); ForAnyValue fails; otherwise a positive operator fails, a negated one holds.
        return if_exists or qualifier == "ForAllValues" or (qualifier == "" and negated)
    compare = _comparator(base.replace("Not", "", 1) if negated else base)
    patterns = _condition_values(base, expected, context)
    values = [str(v) for v in _as_list(actual)]

    def holds(value: str) -> bool:
        hit = any(compare(value, pattern) for pattern in patterns)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(holds(v) for v in values)
    if qualifier == "ForAnyValue":
        return any(holds(v) for v in values)
    return all(holds(v) for v in values) if negated else any(holds(v) for v in values)


def _condition_values(base: str, expected: list[str], context: dict[str, Any] | None) -> list[Tokens]:
    """The policy's values, variables resolved for String, Arn and Bool operators (the ones that
    take variables). A value whose variable has no value is dropped: "there is no equal or like
    value", so StringEquals finds no match and StringNotEquals holds."""
    if context is None or not base.startswith(("String", "Arn", "Bool")):
        return [((True, text),) for text in expected]
    return [tokens for tokens in (resolve_variables(text, context) for text in expected) if tokens is not None]


Comparator = Callable[[str, Tokens], bool]


def _comparator(base: str) -> Comparator:
    if base == "StringEquals":
        return lambda a, e: a == _text(e)
    if base in ("StringEqualsIgnoreCase", "Bool"):
        return lambda a, e: a.lower() == _text(e).lower()
    if base == "StringLike":
        return lambda a, e: glob_match(e, a)
    if base in ("ArnEquals", "ArnLike"):  # "behave identically", component by component
        return lambda a, e: glob_match(e, a, arn=True)
    if base.startswith("Numeric") and base in _ORDER:
        return _ordered(_number, _ORDER[base])
    if base.startswith("Date") and base in _ORDER:
        return _ordered(parse_date, _ORDER[base])
    if base == "IpAddress":
        return lambda a, e: _in_network(a, _text(e))
    raise UnsupportedCondition(f"condition operator {base!r} is not supported")


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    f"{family}{name}": op
    for family in ("Numeric", "Date")
    for name, op in (("Equals", lambda a, b: a == b), ("LessThan", lambda a, b: a < b), ("LessThanEquals", lambda a, b: a <= b),
                     ("GreaterThan", lambda a, b: a > b), ("GreaterThanEquals", lambda a, b: a >= b))
}


def _ordered(parse: Callable[[str], Any], op: Callable[[Any, Any], bool]) -> Comparator:
    def compare(actual: str, expected: Tokens) -> bool:
        a, e = parse(actual), parse(_text(expected))
        return a is not None and e is not None and op(a, e)
    return compare


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_date(text: str) -> datetime | None:
    """A W3C ISO 8601 date/time (no zone means UTC) or epoch seconds, as IAM's Date operators take."""
    text = text.strip()
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return datetime.fromtimestamp(float(text), UTC)
        if re.fullmatch(r"\d{4}-\d{2}", text):
            text += "-01"
        parsed = datetime.fromisoformat(text)
    except (ValueError, OverflowError, OSError):  # not a date, or one past what datetime holds (year 9999)
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _in_network(address: str, network: str) -> bool:
    net = _network(network)
    try:
        return net is not None and ipaddress.ip_address(address) in net
    except ValueError:
        return False


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
