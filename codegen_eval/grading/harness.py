"""The trusted code that runs a job inside a sandbox child (see sandbox.py). Returns plain dicts.

Jobs:
- python: exec the candidate in a fresh namespace (inside moto's `mock_aws()` with fake credentials
  when `aws`), then `check(candidate)`, HumanEval's convention.
- regex: `re.search` over the `match` / `no_match` strings, regexploit's static ReDoS analysis, and an
  equivalence check against the expected pattern (interegular) with counterexamples re-checked by `re`.
- regex_attack: time the pattern on attack strings; the caller's wall-clock limit decides ReDoS.
"""

from __future__ import annotations

import os
import re
import traceback
from contextlib import nullcontext
from typing import Any

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


# The standard library a candidate may import. Imported in the zygote, because its children run as an
# unprivileged uid that may not be allowed to read the interpreter's files (a Python under /root).
STDLIB = (
    "array base64 binascii bisect calendar collections collections.abc concurrent.futures contextlib copy csv "
    "dataclasses datetime decimal enum fnmatch fractions functools glob gzip hashlib heapq hmac io ipaddress "
    "itertools json logging math operator pathlib pprint queue random re secrets shutil signal socket "
    "statistics string struct subprocess tempfile textwrap threading time traceback types typing unicodedata "
    "urllib.parse uuid weakref zlib difflib errno html numbers platform stat xml.etree.ElementTree "
    # codecs load lazily, e.g. idna on the first socket.create_connection
    "encodings.idna encodings.punycode encodings.ascii encodings.latin_1 encodings.utf_16 encodings.utf_32 "
    "encodings.unicode_escape encodings.raw_unicode_escape encodings.base64_codec encodings.hex_codec"
).split()


def warm_up() -> None:
    """Import what every job may need before forking, so each child starts warm."""
    import importlib

    for name in STDLIB:
        importlib.import_module(name)
    import interegular  # noqa: F401
    from regexploit.ast.sre import SreOpParser  # noqa: F401

    _redos(r"^(a+)+$")  # regexploit imports codecs lazily; load them while files are reachable
    _equivalence(r"^a+$", r"^a*$")


def needs_aws(job: dict[str, Any]) -> bool:
    return job["kind"] == "python" and job.get("aws", True)


def warm_up_aws() -> None:
    """boto3 and moto, warmed once in the zygote when its first AWS job comes: ~70 MB and ~1 s that
    runs without AWS cases (HumanEval, regex, IAM) never pay."""
    import boto3
    from moto import mock_aws

    os.environ.update(FAKE_AWS_ENV)
    with mock_aws():  # builds botocore's loaders and moto's backends once
        boto3.client("s3", region_name="us-east-1").list_buckets()


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    jobs = {"python": _python, "regex": _regex, "regex_attack": _regex_attack, "regex_equivalence": _regex_equivalence}
    return jobs[job["kind"]](job)


def _fail(message: str, **details: Any) -> dict[str, Any]:
    return {"status": "TEST_FAIL", "message": message, "details": details}


def _python(job: dict[str, Any]) -> dict[str, Any]:
    if needs_aws(job):
        from moto import mock_aws

        os.environ.update(FAKE_AWS_ENV)
        context: Any = mock_aws()
    else:
        context = nullcontext()
    with context:
        namespace: dict[str, Any] = {"__name__": "candidate"}
        try:
            exec(compile(job["code"], "<candidate>", "exec"), namespace)  # noqa: S102 (sandboxed)
        except BaseException as exc:  # noqa: BLE001
            return _fail(f"the code raised when loaded: {_describe(exc, job)}")
        candidate = namespace.get(job["entry_point"])
        if not callable(candidate):
            return _fail(f"no function named {job['entry_point']!r} is defined")
        # HumanEval's convention: the tests run in the candidate's module, so they may use its helpers.
        exec(compile(job["check"], "<check>", "exec"), namespace)  # noqa: S102 (our own test code)
        try:
            namespace["check"](candidate)
        except AssertionError as exc:
            return _fail(f"assertion failed: {_describe(exc, job)}")
        except BaseException as exc:  # noqa: BLE001
            return _fail(f"{_describe(exc, job)}")
    return {"status": "PASS", "message": "check(candidate) passed"}


def _describe(exc: BaseException, job: dict[str, Any]) -> str:
    """The exception and where it happened, quoting the line of the check or the candidate."""
    sources = {"<check>": job["check"].splitlines(), "<candidate>": job["code"].splitlines()}
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename in sources and frame.lineno and frame.lineno <= len(sources[frame.filename]):
            line = sources[frame.filename][frame.lineno - 1].strip()
            where = f" at {frame.filename.strip('<>')} line {frame.lineno}: {line}"
            break
    text = str(exc)
    return f"{type(exc).__name__}{': ' + text[:300] if text else ''}{where}"


def _regex(job: dict[str, Any]) -> dict[str, Any]:
    pattern = re.compile(job["pattern"])
    missed = [s for s in job.get("match", []) if not pattern.search(s)]
    wrongly = [s for s in job.get("no_match", []) if pattern.search(s)]
    total = len(job.get("match", [])) + len(job.get("no_match", []))
    details: dict[str, Any] = {
        "tests_total": total,
        "tests_passed": total - len(missed) - len(wrongly),
        "should_match_but_did_not": missed,
        "should_not_match_but_did": wrongly,
        "redos": _redos(job["pattern"]),
    }
    details["attacks"] = _attack_strings(job, details["redos"])
    if missed or wrongly:
        parts = [f"should match but did not: {missed!r}" if missed else "", f"should not match but did: {wrongly!r}" if wrongly else ""]
        return _fail("; ".join(p for p in parts if p), **details)
    return {"status": "PASS", "message": f"{total} of {total} strings classified right", "details": details}


def _regex_attack(job: dict[str, Any]) -> dict[str, Any]:
    pattern = re.compile(job["pattern"])
    for attack in job["attacks"]:
        pattern.search(attack)
    return {"status": "PASS", "message": f"{len(job['attacks'])} attack strings answered in time"}


def _regex_equivalence(job: dict[str, Any]) -> dict[str, Any]:
    """A job of its own: the automaton construction can blow up, and it is only advisory."""
    return {"status": "PASS", "details": _equivalence(job["pattern"], job.get("expected"))}


def _redos(pattern: str) -> list[dict[str, Any]]:
    try:
        from regexploit.ast.sre import SreOpParser
        from regexploit.redos import find

        found = find(SreOpParser().parse_sre(pattern))
        return [{"starriness": r.starriness, "example": r.example()} for r in found]
    except Exception as exc:  # noqa: BLE001 (the analyser does not know every construct)
        return [{"unsupported": f"{type(exc).__name__}: {exc}"}]


def _attack_strings(job: dict[str, Any], redos: list[dict[str, Any]]) -> list[str]:
    """Long near-misses: regexploit's examples, and each should-match string repeated with a bad tail."""
    attacks = []
    for finding in redos:
        if "example" in finding:
            try:  # regexploit writes examples as Python expressions like "'a' * 3456 + '0'"
                attacks.append(str(eval(finding["example"], {"__builtins__": {}})))  # noqa: S307 (sandboxed)
            except Exception:  # noqa: BLE001
                pass
    for sample in job.get("match", [])[:3]:
        if sample:
            attacks.append(sample * max(1, 2000 // len(sample)) + "\x00!")
            attacks.append(sample[0] * 5000 + "\x00")
    return attacks


def _anchored_body(pattern: str) -> str | None:
    """The pattern without ^...$ (or \\A...\\Z) when it is anchored at both ends, else None."""
    start = 2 if pattern.startswith("\\A") else 1 if pattern.startswith("^") else 0
    end = 2 if pattern.endswith("\\Z") else 1 if pattern.endswith("$") and not pattern.endswith("\\$") else 0
    return pattern[start : len(pattern) - end] if start and end else None


def _equivalence(candidate: str, expected: str | None) -> dict[str, Any]:
    if not expected:
        return {"checked": False, "reason": "no expected pattern"}
    bodies = _anchored_body(candidate), _anchored_body(expected)
    if None in bodies:
        return {"checked": False, "reason": "only patterns anchored at both ends are compared"}
    try:
        import interegular

        cand, exp = (interegular.parse_pattern(b).to_fsm() for b in bodies)
        extra = _examples(cand.difference(exp), candidate, expected, True)
        missing = _examples(exp.difference(cand), candidate, expected, False)
    except Exception as exc:  # noqa: BLE001 (backreferences, lookbehind ...)
        return {"checked": False, "reason": f"unsupported by interegular: {type(exc).__name__}: {exc}"[:300]}
    return {"checked": True, "equivalent": not extra and not missing, "accepted_not_expected": extra, "expected_not_accepted": missing}


def _examples(fsm: Any, candidate: str, expected: str, candidate_accepts: bool, limit: int = 5) -> list[str]:
    """Up to `limit` strings from `fsm`, each confirmed with `re` (interegular is not exact on everything)."""
    found = []
    for i, chars in enumerate(fsm.strings()):
        if i >= 200 or len(found) >= limit:
            break
        text = "".join(c if isinstance(c, str) else next(iter(c), "?") for c in chars)
        if bool(re.search(candidate, text)) == candidate_accepts and bool(re.search(expected, text)) != candidate_accepts:
            found.append(text)
    return found
