"""Differential checks: a candidate against its case's reference, where the task fixes the behaviour.

EvalPlus's oracle idea, adapted. A policy is evaluated with the project's IAM evaluator (iam.py) on a
request space generated from both policies and the case's probes: every action, resource, principal
and condition value either mentions, plus neighbours (another account, bucket and region, an
anonymous caller, an action of the same service and of another one, a missing condition key). Any
request the two decide differently is a difference: an over-grant (the candidate allows what the
reference does not), an under-grant, or, when the case asks for explicit denies, an implicit deny
where the reference denies explicitly. Where a task leaves freedom, the case says so
(`may_allow` / `may_deny` in its tests) and those requests are not compared.

Regexes are compared in the sandbox (harness.py's `regex_equivalence` job, interegular), under
re.search as the cases grade them, half-anchored patterns included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from pydantic import BaseModel

from codegen_eval.dataset.schema import AccessProbe, PolicyTests, RequestPattern
from codegen_eval.grading import iam

OTHER_ACCOUNT = "999999999999"
OTHER_REGION = "eu-west-3"
OTHER_VALUE = "zz-other"
OTHER_IP = "198.51.100.250"  # TEST-NET-2: inside no CIDR a case would name
MAX_REQUESTS = 6000  # a bound on the work per candidate (~0.1 s); what is left out is said in the result


class Request(BaseModel, frozen=True):
    action: str
    resource: str | None = None
    principal: tuple[str, str] | None = None
    context: tuple[tuple[str, str | tuple[str, ...]], ...] = ()

    def describe(self) -> str:
        text = self.action + (f" on {self.resource}" if self.resource else "")
        if self.principal is not None:
            text += " by " + (self.principal[1] or "anonymous")
        if self.context:
            text += " with " + ", ".join(f"{k}={v if isinstance(v, str) else list(v)}" for k, v in self.context)
        return text


class Difference(BaseModel):
    request: Request
    reference: iam.Decision
    candidate: iam.Decision
    kind: str  # "over-grant", "under-grant", "not explicitly denied"

    def describe(self) -> str:
        return f"{self.kind}: {self.request.describe()}: reference {self.reference}, candidate {self.candidate}"


class PolicyDiff(BaseModel):
    requests: int  # requests compared
    differences: list[Difference]
    truncated: bool = False  # the space was larger than MAX_REQUESTS


def policy_check(candidate: dict[str, Any], reference_text: str, tests: PolicyTests) -> Any:
    """The `differential` check (a gating CheckResult): the share of generated requests the candidate
    decides as the reference does; any difference fails the case (partial credit at most)."""
    from codegen_eval.grading.checks import CheckResult, CheckStatus  # checks.py calls this module

    try:
        diff = compare_policies(candidate, json.loads(reference_text), tests)
    except iam.UnsupportedCondition as exc:  # the probes' check reports the candidate's; a reference's is not a verdict
        return CheckResult(name="differential", gate=False, status=CheckStatus.SKIPPED, message=f"not compared: {exc}")
    if not diff.differences:
        return CheckResult(name="differential", status=CheckStatus.OK, message=f"{diff.requests} generated requests decided as the reference does")
    wrong = [d.describe() for d in diff.differences]
    return CheckResult(
        name="differential", status=CheckStatus.TEST_FAIL, message=f"{len(wrong)} of {diff.requests} generated requests differ from the reference: {describe(diff)}",
        fraction=1 - len(wrong) / diff.requests, details={"differences": wrong[:50], "requests": diff.requests},
    )


def compare_policies(candidate: dict[str, Any], reference: dict[str, Any], tests: PolicyTests) -> PolicyDiff:
    """Every request of the generated space that the two policies decide differently (raises
    iam.UnsupportedCondition when either policy uses a condition the evaluator does not know)."""
    space = request_space(candidate, reference, tests)
    requests = list(islice(space, MAX_REQUESTS))
    truncated = next(space, None) is not None
    differences = []
    for request in requests:
        context = dict(request.context)
        ref = iam.evaluate(reference, request.action, request.resource, context, request.principal)
        cand = iam.evaluate(candidate, request.action, request.resource, context, request.principal)
        kind = _difference(ref, cand, tests.explicit_deny)
        if kind and not _free(request, kind, tests):
            differences.append(Difference(request=request, reference=ref, candidate=cand, kind=kind))
    return PolicyDiff(requests=len(requests), differences=differences, truncated=truncated)


def _difference(reference: iam.Decision, candidate: iam.Decision, explicit: bool) -> str | None:
    if (reference == "allow") != (candidate == "allow"):
        return "over-grant" if candidate == "allow" else "under-grant"
    if explicit and reference == "explicit_deny" and candidate == "implicit_deny":
        return "not explicitly denied"
    return None


def _free(request: Request, kind: str, tests: PolicyTests) -> bool:
    """Whether the case leaves this request to the answer (an acceptable extra grant, or denial)."""
    patterns = tests.may_allow if kind == "over-grant" else tests.may_deny if kind == "under-grant" else []
    return any(_covers(p, request) for p in patterns)


def _covers(pattern: RequestPattern, request: Request) -> bool:
    if not iam.wildcard_match(pattern.action, request.action, ignore_case=True):
        return False
    return pattern.resource is None or (request.resource is not None and iam.wildcard_match(pattern.resource, request.resource))


# --- the request space -----------------------------------------------------------------------------------


def request_space(candidate: dict[str, Any], reference: dict[str, Any], tests: PolicyTests) -> Iterator[Request]:
    """Requests built from what both policies and the probes mention, and their neighbours; the
    probes' own requests first, then every action with every resource of its service."""
    policies = [reference, candidate]
    probes = [*tests.allow, *tests.deny]
    seen: set[Request] = set()
    contexts = _contexts(policies, probes)
    bases = _unique([(), *(_frozen(p.context) for p in probes)])
    actions = _unique(_actions(policies, probes))
    resources = _unique(_resources(policies, probes, contexts)) if tests.policy_type != "trust" else []
    principals = _unique(_principals(policies, probes)) if tests.policy_type != "identity" else [None]
    for probe in probes:  # the case's own requests, varied one condition key at a time
        for context in _varied(dict(probe.context), contexts):
            yield from _new(seen, Request(action=probe.action, resource=probe.resource, principal=probe_principal(probe), context=context))
    for action in actions:
        for resource in [r for r in resources if _same_service(action, r)] or [None]:
            for principal in principals:
                for context in bases:
                    yield from _new(seen, Request(action=action, resource=resource, principal=principal, context=context))


def _new(seen: set[Request], request: Request) -> Iterator[Request]:
    if request not in seen:
        seen.add(request)
        yield request


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def probe_principal(probe: AccessProbe) -> iam.Principal | None:
    """Who asks in a probe, as the IAM evaluator takes it (None: the policy's own account)."""
    if probe.principal is None:
        return None
    if probe.principal == "anonymous":
        return iam.ANONYMOUS
    return next(iter(probe.principal.items()))


def _entries(policies: list[dict[str, Any]], *fields: str) -> Iterator[Any]:
    for policy in policies:
        for st in _statements(policy):
            for name in fields:
                if name in st:
                    yield from iam._as_list(st[name]) if not isinstance(st[name], dict) else [st[name]]


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [st for st in iam.statements(policy) if isinstance(st, dict)]


def _instance(pattern: str, filler: str) -> str:
    """A concrete value a wildcard pattern matches (or the value itself)."""
    return pattern.replace("*", filler).replace("?", filler[0])


def _actions(policies: list[dict[str, Any]], probes: list[AccessProbe]) -> Iterator[str]:
    yield from (probe.action for probe in probes)
    services = set()
    for action in _entries(policies, "Action", "NotAction"):
        if isinstance(action, str):
            yield _instance(action, "Zz") if action != "*" else "zz:Zz"
            services.add(action.split(":")[0])
    for service in sorted(services - {"*"}):
        yield f"{service}:ZzAction"  # an action of the same service nobody named
    yield "zz:ZzAction"  # and one of another service


def _resources(policies: list[dict[str, Any]], probes: list[AccessProbe], contexts: list[tuple]) -> Iterator[str]:
    values = _variable_values(contexts)
    named = [p.resource for p in probes if p.resource] + [r for r in _entries(policies, "Resource", "NotResource") if isinstance(r, str)]
    for resource in named:
        for resolved in _resolved(resource, values):
            concrete = _instance(resolved, "zz") if resolved != "*" else "*"
            yield concrete
            yield from _neighbours(concrete)


def _variable_values(contexts: list[tuple]) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for context in contexts:
        for key, value in context:
            if isinstance(value, str):
                values.setdefault(key.lower(), []).append(value)
    return {key: _unique(found) for key, found in values.items()}


def _resolved(text: str, values: dict[str, list[str]]) -> list[str]:
    """`text` with each policy variable replaced by each value the contexts give it (or a stranger's)."""
    start = text.find("${")
    if start < 0:
        return [text]
    end = text.find("}", start)
    if end < 0:
        return [text]
    name = text[start + 2 : end].split(",")[0].strip().lower()
    head, tail = text[:start], text[end + 1 :]
    options = values.get(name, []) + [OTHER_VALUE]
    return [head + value + rest for value in options[:3] for rest in _resolved(tail, values)]


def _neighbours(arn: str) -> Iterator[str]:
    """The same ARN in another account, region and bucket, and the bucket of an object or an object of a bucket."""
    parts = arn.split(":", 5)
    if len(parts) < 6 or parts[0] != "arn":
        return
    if parts[4] not in ("", "*"):
        yield ":".join([*parts[:4], OTHER_ACCOUNT, parts[5]])
    if parts[3] not in ("", "*"):
        yield ":".join([*parts[:3], OTHER_REGION, *parts[4:]])
    if parts[2] == "s3":
        bucket, slash, key = parts[5].partition("/")
        base = ":".join(parts[:5]) + ":"
        yield base + bucket + "-other" + slash + key
        yield base + bucket + ("" if slash else "/zz")
    elif "/" in parts[5]:
        yield arn.rsplit("/", 1)[0] + "/zz-other"


def _same_service(action: str, resource: str) -> bool:
    parts = resource.split(":")
    return len(parts) < 3 or parts[0] != "arn" or parts[2].lower() == action.split(":")[0].lower() or action.startswith("zz:")


def _principals(policies: list[dict[str, Any]], probes: list[AccessProbe]) -> Iterator[iam.Principal]:
    yield from (p for p in map(probe_principal, probes) if p is not None)
    for block in _entries(policies, "Principal", "NotPrincipal"):
        if not isinstance(block, dict):
            continue
        for kind, listed in block.items():
            for value in iam._as_list(listed):
                if isinstance(value, str) and value != "*":
                    yield from _principal_neighbours(kind, value)
    yield ("AWS", f"arn:aws:iam::{OTHER_ACCOUNT}:user/zz")
    yield ("Service", "zz.amazonaws.com")
    yield iam.ANONYMOUS


def _principal_neighbours(kind: str, value: str) -> Iterator[iam.Principal]:
    if kind != "AWS":
        yield (kind, value)
        return
    chain = iam.principal_chain(("AWS", value))
    identity = chain[-1][1]
    parts = identity.split(":")
    if len(parts) < 6:
        return
    account = parts[4]
    yield ("AWS", identity)
    if parts[5] == "root":
        yield ("AWS", f"arn:aws:iam::{account}:user/zz")
    elif parts[5].startswith("role/"):
        yield ("AWS", f"arn:aws:sts::{account}:assumed-role/{parts[5].rsplit('/', 1)[-1]}/zz")
        yield ("AWS", f"arn:aws:iam::{account}:role/zz-other")
    else:
        yield ("AWS", f"arn:aws:iam::{account}:user/zz-other")


# --- condition contexts ----------------------------------------------------------------------------------


def _contexts(policies: list[dict[str, Any]], probes: list[AccessProbe]) -> list[tuple]:
    """Condition contexts: none, each probe's, and each probe's with one key changed to another value
    either policy or probe mentions (or left out)."""
    values = _condition_values(policies, probes)
    bases = _unique([(), *(_frozen(p.context) for p in probes)])
    found: list[tuple] = []
    for base in bases:
        found += _varied(dict(base), [], values)
    return _unique(found)[:40]


def _varied(base: dict[str, Any], contexts: list[tuple], values: dict[str, list[Any]] | None = None) -> list[tuple]:
    """`base`, and `base` with one key changed to each other value, or removed."""
    if values is None:
        values = {}
        for context in contexts:
            for key, value in context:
                values.setdefault(key, []).append(value)
        values = {key: _unique(found) for key, found in values.items()}
    variants = [_frozen(base)]
    for key, options in values.items():
        for value in options:
            variants.append(_frozen({**base, key: value}))
        if key in base:
            variants.append(_frozen({k: v for k, v in base.items() if k != key}))
    return _unique(variants)


def _frozen(context: dict[str, Any]) -> tuple:
    return tuple(sorted((k, v if isinstance(v, str) else tuple(v)) for k, v in context.items()))


def _condition_values(policies: list[dict[str, Any]], probes: list[AccessProbe]) -> dict[str, list[Any]]:
    """Per condition key: the values the policies compare it with (wildcards filled in), values just
    outside them (another number, date, address; true and false), and what the probes send."""
    values: dict[str, list[Any]] = {}
    for block in _entries(policies, "Condition"):
        if not isinstance(block, dict):
            continue
        for operator, pairs in block.items():
            if not isinstance(pairs, dict):
                continue
            for key, listed in pairs.items():
                for value in iam._as_list(listed):
                    values.setdefault(key, []).extend(_around(operator, str(value)))
    for probe in probes:
        for key, value in probe.context.items():
            values.setdefault(key, []).append(value if isinstance(value, str) else tuple(value))
    for name in _variables(policies):  # a policy variable also takes a stranger's value
        key = next((k for k in values if k.lower() == name.lower()), name)
        values.setdefault(key, []).append(OTHER_VALUE)
    return {key: _unique(found)[:6] for key, found in values.items() if not key.startswith("${")}


def _variables(policies: list[dict[str, Any]]) -> list[str]:
    import re

    text = " ".join(json.dumps(p) for p in policies)
    names = (m.split(",")[0].strip() for m in re.findall(r"\$\{([^}]*)\}", text))
    return _unique(n for n in names if n not in ("*", "?", "$"))


def _around(operator: str, value: str) -> list[str]:
    base = operator.split(":")[-1].replace("IfExists", "")
    if base == "Bool" or base == "Null":
        return ["true", "false"]
    if base.startswith("Numeric"):
        number = iam._number(value)
        return [value] if number is None else [value, str(number + 1), str(number - 1)]
    if base.startswith("Date"):
        return [value, "2000-01-01T00:00:00Z", "2099-01-01T00:00:00Z"]
    if base.endswith("IpAddress"):
        network = iam._network(value)
        return [OTHER_IP] if network is None else [str(next(iter(network.hosts()), network.network_address)), OTHER_IP]
    if "${" in value:
        return [OTHER_VALUE]
    return [_instance(value, "zz"), OTHER_VALUE]


def describe(diff: PolicyDiff, limit: int = 5) -> str:
    shown = "; ".join(d.describe() for d in diff.differences[:limit])
    more = len(diff.differences) - limit
    return shown + (f"; and {more} more" if more > 0 else "")


def policy_text(policy: dict[str, Any]) -> str:
    return json.dumps(policy, indent=2)
