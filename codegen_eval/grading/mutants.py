"""Mutants of a reference solution, format by format, to measure whether a case's tests fail wrong answers.

Each operator makes one small change a model plausibly makes (a dropped keyword argument, a widened
resource, a regex without its `^`); a case's tests are adequate when they fail ("kill") the mutants that
change behaviour. Operators work on the parsed reference (Python's ast, the policy's JSON, the regex
text), so every mutant parses. `mutants()` picks at most `limit` per case, spread over the operators,
deterministically (same reference, same mutants).
"""

from __future__ import annotations

import ast
import copy
import difflib
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from codegen_eval.dataset import Case

OPERATORS_VERSION = 1  # bump when an operator changes: cached mutation verdicts are then redone
LIMITS = {"python": 12, "json": 40, "regex": 24}


class Mutant(BaseModel, frozen=True):
    operator: str  # e.g. "drop-keyword"
    where: str  # what changed, for the report
    code: str


def mutants(case: Case, limit: int | None = None) -> list[Mutant]:
    """Distinct mutants of the case's reference, at most `limit` (default: per format), spread over operators."""
    made = {"python": python_mutants, "json": policy_mutants, "regex": regex_mutants}[case.format](case.expected)
    reference = _normal(case.format, case.expected)
    seen, unique = {reference}, []
    for mutant in made:
        key = _normal(case.format, mutant.code)
        if key not in seen:
            seen.add(key)
            unique.append(mutant)
    return spread(unique, LIMITS[case.format] if limit is None else limit)


def spread(found: list[Mutant], limit: int) -> list[Mutant]:
    """At most `limit`, round-robin over operators (each operator's picks evenly spaced in its list)."""
    by_operator: dict[str, list[Mutant]] = {}
    for mutant in found:
        by_operator.setdefault(mutant.operator, []).append(mutant)
    quota = dict.fromkeys(by_operator, 0)
    left = min(limit, len(found))
    while left:
        for name, items in by_operator.items():
            if left and quota[name] < len(items):
                quota[name] += 1
                left -= 1
    picked = []
    for name, items in by_operator.items():
        n = quota[name]
        picked += [items[(i * len(items)) // n] for i in range(n)] if n else []
    return picked


def _normal(fmt: str, code: str) -> str:
    if fmt == "python":
        return ast.unparse(ast.parse(code))
    if fmt == "json":
        return json.dumps(json.loads(code), sort_keys=True)
    return code


def diff(reference: str, mutant: str, fmt: str) -> str:
    """The changed lines, as a unified diff (Python compared as ast.unparse writes both)."""
    if fmt == "regex":
        return mutant
    a, b = (_normal(fmt, code) if fmt == "python" else json.dumps(json.loads(code), indent=1) for code in (reference, mutant))
    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=0)
    return "\n".join(line for line in lines if not line.startswith(("---", "+++", "@@")))


# --- python ---------------------------------------------------------------------------------------------


def python_mutants(code: str) -> list[Mutant]:
    """Drop a statement or a call, a keyword argument or a raise; run a loop once; swallow a function's
    exceptions; change a constant, a comparison or a boolean operator; change the returned shape."""
    tree = ast.parse(code)
    found: list[Mutant] = []
    for index, node in enumerate(ast.walk(tree)):
        for operator, describe in _PY_OPERATORS:
            for where, change in describe(node):
                mutated = copy.deepcopy(tree)
                target = list(ast.walk(mutated))[index]
                if change(target) is not False:
                    found.append(Mutant(operator=operator, where=where, code=ast.unparse(ast.fix_missing_locations(mutated)) + "\n"))
    return found


Change = Callable[[ast.AST], Any]


def _bodies(node: ast.AST) -> Iterator[tuple[str, list[ast.stmt]]]:
    for name in ("body", "orelse", "finalbody"):
        body = getattr(node, name, None)
        if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
            yield name, body


def _drop_statement(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, ast.Module):
        return  # imports and definitions: dropping them only makes names undefined
    for name, body in _bodies(node):
        for i, st in enumerate(body):
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)) or _docstring(st):
                continue

            def change(target: ast.AST, name: str = name, i: int = i) -> None:
                body = getattr(target, name)
                body[i : i + 1] = [] if len(body) > 1 else [ast.Pass()]

            yield f"line {st.lineno}: drop `{_short(st)}`", change


def _docstring(st: ast.stmt) -> bool:
    return isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant) and isinstance(st.value.value, str)


def _drop_call(node: ast.AST) -> Iterator[tuple[str, Change]]:
    """`x = f(a)` -> `x = a`: a call whose result stands in for its first argument (e.g. int(), sorted())."""
    if isinstance(node, ast.Call) and node.args and not isinstance(node.func, ast.Attribute):
        def change(target: ast.AST) -> None:
            first = target.args[0]  # type: ignore[attr-defined]
            target.__class__ = first.__class__
            target.__dict__.update(first.__dict__)

        yield f"line {node.lineno}: `{_short(node)}` without the call", change


def _drop_keyword(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, ast.Call):
        for i, keyword in enumerate(node.keywords):
            if keyword.arg is not None:
                yield f"line {node.lineno}: drop {keyword.arg}= from `{_short(node.func)}(...)`", lambda t, i=i: t.keywords.pop(i)  # type: ignore[attr-defined]


def _first_iteration(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, (ast.For, ast.AsyncFor, ast.While)):
        yield f"line {node.lineno}: the loop stops after its first iteration", lambda t: t.body.append(ast.Break())  # type: ignore[attr-defined]


def _swallow(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        def change(target: ast.AST) -> None:
            handler = ast.ExceptHandler(type=ast.Name("Exception", ast.Load()), name=None, body=[ast.Return(ast.Constant(None))])
            target.body = [ast.Try(body=target.body, handlers=[handler], orelse=[], finalbody=[])]  # type: ignore[attr-defined]

        yield f"line {node.lineno}: {node.name}() returns None on any exception", change


def _remove_raise(node: ast.AST) -> Iterator[tuple[str, Change]]:
    for name, body in _bodies(node) if not isinstance(node, ast.Module) else ():
        for i, st in enumerate(body):
            if isinstance(st, ast.Raise):
                yield f"line {st.lineno}: drop `{_short(st)}`", lambda t, name=name, i=i: getattr(t, name).__setitem__(slice(i, i + 1), [ast.Pass()])
    if isinstance(node, ast.ExceptHandler) and not any(isinstance(s, ast.Raise) for s in node.body):
        yield f"line {node.lineno}: the except clause re-raises", lambda t: t.body.insert(0, ast.Raise())  # type: ignore[attr-defined]


_COMPARISONS = {ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
                ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}


def _operator(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            new = _COMPARISONS[type(op)]
            yield f"line {node.lineno}: {type(op).__name__} -> {new.__name__} in `{_short(node)}`", lambda t, i=i, new=new: t.ops.__setitem__(i, new())
    if isinstance(node, ast.BoolOp):
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        yield f"line {node.lineno}: {type(node.op).__name__} -> {new.__name__} in `{_short(node)}`", lambda t, new=new: setattr(t, "op", new())
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        def change(target: ast.AST) -> None:
            inner = target.operand  # type: ignore[attr-defined]
            target.__class__ = inner.__class__
            target.__dict__.update(inner.__dict__)

        yield f"line {node.lineno}: drop `not` in `{_short(node)}`", change


def _constant(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, ast.Constant) and type(node.value) in (int, bool, float):
        new = (not node.value) if isinstance(node.value, bool) else node.value + 1
        yield f"line {node.lineno}: {node.value!r} -> {new!r}", lambda t, new=new: setattr(t, "value", new)


def _shape(node: ast.AST) -> Iterator[tuple[str, Change]]:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "sorted":
        yield f"line {node.lineno}: unsorted `{_short(node)}`", lambda t: (setattr(t, "func", ast.Name("list", ast.Load())), t.keywords.clear())  # type: ignore[attr-defined]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "decode":
        def change(target: ast.AST) -> None:
            inner = target.func.value  # type: ignore[attr-defined]
            target.__class__ = inner.__class__
            target.__dict__.update(inner.__dict__)

        yield f"line {node.lineno}: bytes for str in `{_short(node)}`", change
    if isinstance(node, ast.Return) and isinstance(node.value, (ast.Dict, ast.DictComp)):
        yield f"line {node.lineno}: the returned dict's keys as a list", lambda t: setattr(t, "value", ast.Call(ast.Name("list", ast.Load()), [t.value], []))  # type: ignore[attr-defined]
    if isinstance(node, ast.Return) and isinstance(node.value, (ast.List, ast.ListComp)):
        yield f"line {node.lineno}: the returned list reversed", lambda t: setattr(t, "value", ast.Subscript(t.value, ast.Slice(step=ast.Constant(-1)), ast.Load()))  # type: ignore[attr-defined]


def _short(node: ast.AST, width: int = 60) -> str:
    text = " ".join(ast.unparse(node).split())
    return text if len(text) <= width else text[: width - 1] + "…"


_PY_OPERATORS: list[tuple[str, Callable[[ast.AST], Iterator[tuple[str, Change]]]]] = [
    ("drop-statement", _drop_statement), ("drop-keyword", _drop_keyword), ("first-iteration", _first_iteration),
    ("swallow-exceptions", _swallow), ("remove-raise", _remove_raise), ("operator", _operator), ("constant", _constant),
    ("returned-shape", _shape), ("drop-call", _drop_call),
]


# --- json: IAM policies -----------------------------------------------------------------------------


_WEAKER = {"StringEquals": "StringLike", "ArnEquals": "ArnLike", "StringEqualsIgnoreCase": "StringLike",
           "StringNotEquals": "StringNotLike", "ArnNotEquals": "ArnNotLike", "BoolIfExists": "Bool", "Bool": "BoolIfExists"}
_TRANSPORT_MFA = re.compile(r"aws:(SecureTransport|MultiFactorAuth\w*)", re.IGNORECASE)


def policy_mutants(code: str) -> list[Mutant]:
    """Drop each action, NotAction, principal, resource and condition item; widen a resource, an ARN
    segment or an action to `*`, a Principal to "*"; flip an Effect; drop a Deny statement; weaken a
    condition operator; drop aws:SecureTransport and MFA conditions."""
    policy = json.loads(code)
    statements = policy.get("Statement")
    if isinstance(statements, dict):
        policy["Statement"] = statements = [statements]
    if not isinstance(statements, list):
        return []
    found: list[Mutant] = []

    def add(operator: str, where: str, change: Callable[[dict[str, Any]], Any]) -> None:
        mutated = copy.deepcopy(policy)
        change(mutated)
        found.append(Mutant(operator=operator, where=where, code=json.dumps(mutated, indent=2)))

    for s, st in enumerate(statements):
        if not isinstance(st, dict):
            continue
        name = f"statement {st.get('Sid') or s + 1}"
        for operator, where, change in _statement_mutations(st):
            add(operator, f"{name}: {where}", lambda p, s=s, change=change: change(p["Statement"][s]))
        if st.get("Effect") == "Deny" and len(statements) > 1:
            add("drop-deny", f"{name}: the Deny statement dropped", lambda p, s=s: p["Statement"].pop(s))
    return found


Mutation = tuple[str, str, Callable[[dict[str, Any]], Any]]


def _statement_mutations(st: dict[str, Any]) -> Iterator[Mutation]:
    flipped = "Deny" if st.get("Effect") == "Allow" else "Allow"
    yield "flip-effect", f"Effect {st.get('Effect')} -> {flipped}", lambda t: t.__setitem__("Effect", flipped)
    for key in ("Action", "NotAction", "Resource", "NotResource"):
        if key in st:
            yield from _list_mutations(st, key)
    for key in ("Principal", "NotPrincipal"):
        if key in st:
            yield from _principal_mutations(st, key)
    if isinstance(st.get("Condition"), dict):
        yield from _condition_mutations(st["Condition"])


def _list_mutations(st: dict[str, Any], key: str) -> Iterator[Mutation]:
    items = st[key] if isinstance(st[key], list) else [st[key]]
    for i, item in enumerate(items):
        if len(items) > 1:
            yield f"drop-{key.lower()}", f"{key} {item!r} dropped", lambda t, i=i: t.__setitem__(key, [x for j, x in enumerate(items) if j != i])
        for wider in _wider(key, item):
            yield "widen", f"{key} {item!r} -> {wider!r}", lambda t, i=i, wider=wider: t.__setitem__(key, [wider if j == i else x for j, x in enumerate(items)])


def _wider(key: str, item: Any) -> list[str]:
    if not isinstance(item, str) or item == "*":
        return []
    if "Action" in key:
        service = item.split(":")[0]
        return [f"{service}:*"] if item != f"{service}:*" else ["*"]
    found = ["*"]
    parts = item.split(":", 5)
    if len(parts) == 6:
        for index in (3, 4):  # region, account
            if parts[index] not in ("", "*"):
                found.append(":".join(parts[:index] + ["*"] + parts[index + 1 :]))
        head, slash, _ = parts[5].partition("/")
        if slash and parts[5] != head + "/*":
            found.append(":".join(parts[:5]) + ":" + head + "/*")
    return found


def _principal_mutations(st: dict[str, Any], key: str) -> Iterator[Mutation]:
    block = st[key]
    if block != "*":
        yield "principal-star", f'{key} -> "*"', lambda t: t.__setitem__(key, "*")
    if not isinstance(block, dict):
        return
    listed = [(kind, value) for kind, values in block.items() for value in (values if isinstance(values, list) else [values])]
    if len(listed) < 2:
        return
    for kind, value in listed:
        def change(t: dict[str, Any], kind: str = kind, value: Any = value) -> None:
            kept = [v for k, v in listed if k == kind and v != value]
            t[key] = {k: v for k, v in block.items() if k != kind}
            if kept:
                t[key][kind] = kept
        yield "drop-principal", f"{key} {kind} {value!r} dropped", change


def _condition_mutations(condition: dict[str, Any]) -> Iterator[Mutation]:
    for operator, pairs in condition.items():
        if not isinstance(pairs, dict):
            continue
        name = operator.split(":")[-1]
        if name in _WEAKER:
            weaker = operator.replace(name, _WEAKER[name])
            yield "weaken-operator", f"{operator} -> {weaker}", lambda t, o=operator, w=weaker: t["Condition"].__setitem__(w, t["Condition"].pop(o))
        for key, values in pairs.items():
            kind = "drop-transport-mfa" if _TRANSPORT_MFA.search(key) else "drop-condition"
            yield kind, f"condition {operator} {key} dropped", lambda t, o=operator, k=key: _drop_condition(t, o, k)
            if isinstance(values, list) and len(values) > 1:
                for value in values:
                    yield "drop-condition-value", f"condition {operator} {key} value {value!r} dropped", lambda t, o=operator, k=key, v=value: t["Condition"][o].__setitem__(k, [x for x in values if x != v])


def _drop_condition(st: dict[str, Any], operator: str, key: str) -> None:
    st["Condition"][operator].pop(key)
    if not st["Condition"][operator]:
        st["Condition"].pop(operator)
    if not st["Condition"]:
        st.pop("Condition")


# --- regex ----------------------------------------------------------------------------------------------


def regex_mutants(pattern: str) -> list[Mutant]:
    """Drop `^` or `$` (or \\A, \\Z); widen a quantifier ({m,n} -> {m,}, {n} -> +, ? -> *, + -> *) or a
    class ([a-z0-9] -> [^/], \\d -> \\w); drop a branch of an alternation."""
    found = []
    for operator, where, text in _regex_edits(pattern):
        try:
            re.compile(text)
        except (re.error, RecursionError, OverflowError):
            continue
        found.append(Mutant(operator=operator, where=where, code=text))
    return found


def _regex_edits(p: str) -> Iterator[tuple[str, str, str]]:
    if p.startswith("\\A") or p.startswith("^"):
        lead = 2 if p.startswith("\\A") else 1
        yield "drop-anchor", f"drop the leading {p[:lead]}", p[lead:]
    if p.endswith("\\Z") or (p.endswith("$") and not p.endswith("\\$")):
        tail = 2 if p.endswith("\\Z") else 1
        yield "drop-anchor", f"drop the trailing {p[-tail:]}", p[:-tail]
    if p.endswith("\\Z"):
        yield "drop-anchor", "\\Z -> $ (a final newline accepted)", p[:-2] + "$"
    for m in re.finditer(r"(?<!\\)\{(\d+)(?:(,)(\d*))?\}", p):
        low, comma, high = m.groups()
        head, tail = p[: m.start()], p[m.end() :]
        if not comma or high:  # {n} or {m,n}: no upper bound
            yield "widen-quantifier", f"{m.group(0)} -> {{{low},}}", head + "{%s,}" % low + tail
        if int(low) > 0:  # a lower bound of zero
            yield "widen-quantifier", f"{m.group(0)} -> {{0,{high or ('' if comma else low)}}}", head + "{0,%s}" % (high or ("" if comma else low)) + tail
    for m in re.finditer(r"(?<![\\(])([?+])(?![?+*])", p):
        if m.start() > 0 and p[m.start() - 1] not in "(":
            yield "widen-quantifier", f"{m.group(1)} at {m.start()} -> *", p[: m.start()] + "*" + p[m.end() :]
    for m in re.finditer(r"(?<!\\)\[(\^?)((?:\\.|[^\]\\])+)\]", p):
        if not m.group(1):
            yield "widen-class", f"{m.group(0)} -> [^/]", p[: m.start()] + "[^/]" + p[m.end() :]
            yield "widen-class", f"{m.group(0)} -> .", p[: m.start()] + "." + p[m.end() :]
    for m in re.finditer(r"\\d", p):
        yield "widen-class", f"\\d at {m.start()} -> \\w", p[: m.start()] + "\\w" + p[m.end() :]
    yield from _drop_branches(p)


_CLASS_END = re.compile(r"(?:\\.|[^\]\\])+\]")


def _past_escape_or_class(p: str, i: int) -> int | None:
    """Where scanning resumes after the escape or character class at `i` (whose `|` and `()` are literal), or None."""
    if p[i] == "\\":
        return i + 2
    if p[i] == "[":
        close = _CLASS_END.match(p, i + 1 + (p[i + 1 : i + 2] == "^"))
        return close.end() if close else i + 1
    return None


def _drop_branches(p: str) -> Iterator[tuple[str, str, str]]:
    """Each `|`-separated branch of each group, dropped (a group with two branches keeps the other)."""
    stack: list[int] = []
    i = 0
    while i < len(p):
        char, skipped = p[i], _past_escape_or_class(p, i)
        if skipped is not None:
            i = skipped
            continue
        if char == "(":
            stack.append(i)
        elif char == ")" and stack:
            start = stack.pop()
            yield from _branches_of(p, start, i)
        i += 1


def _branches_of(p: str, start: int, end: int) -> Iterator[tuple[str, str, str]]:
    inner_start = start + 1
    if p.startswith("?:", inner_start):
        inner_start += 2
    elif p.startswith("?", inner_start):
        return  # lookarounds and named groups: left alone
    bars, depth, i = [], 0, inner_start
    while i < end:
        char, skipped = p[i], _past_escape_or_class(p, i)
        if skipped is not None:
            i = skipped
            continue
        depth += char == "("
        depth -= char == ")"
        if char == "|" and depth == 0:
            bars.append(i)
        i += 1
    if not bars:
        return
    edges = [inner_start - 1, *bars, end]
    branches = [p[edges[k] + 1 : edges[k + 1]] for k in range(len(edges) - 1)]
    for k, branch in enumerate(branches):
        kept = "|".join(b for j, b in enumerate(branches) if j != k)
        yield "drop-branch", f"drop the branch {branch!r}", p[:inner_start] + kept + p[end:]
