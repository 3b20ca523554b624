"""The code that runs inside a sandbox job (see sandbox.py and zygote.py). Returns plain dicts.

Jobs:
- python: two processes. The candidate's code runs in one (`serve_candidate`); the case's
  `check(candidate)`, HumanEval's convention, runs in another, trusted one (`run_check`) and calls the
  candidate through a proxy that passes plain data only (wire.py), so the verdict is decided where the
  candidate cannot reach. For AWS cases the trusted process also serves moto, which both sides use as
  their AWS endpoint: the check sees exactly what the candidate did.
- regex: `re.search` over the `match` / `no_match` strings, regexploit's static ReDoS analysis, and an
  equivalence check against the expected pattern (interegular) with counterexamples re-checked by `re`.
- regex_attack: time the pattern on attack strings; the caller's wall-clock limit decides ReDoS.
- probe: which of the given paths the sandbox's uid cannot read (the grading self-test).
"""

from __future__ import annotations

import os
import re
import socket
import traceback
from typing import Any

from codegen_eval.grading import wire

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


# Services whose moto server apps and botocore models the zygote builds before it forks, so a case pays
# for none of that. A service not listed still works; its first use in a case is slower.
AWS_SERVICES = (
    "s3 dynamodb sqs sns iam sts secretsmanager ssm kms lambda ec2 logs kinesis stepfunctions events cloudwatch"
).split()
warm_apps: dict[str, Any] = {}


def warm_up_aws() -> None:
    """boto3, moto's per-service server apps and botocore's models, warmed once in the zygote when its first
    AWS job comes: ~1 s and ~100 MB that runs without AWS cases (HumanEval, regex, IAM) never pay."""
    import boto3

    from codegen_eval.grading import aws_endpoint, aws_wire

    os.environ.update(aws_environment(0))
    for service in AWS_SERVICES:
        warm_apps[service] = aws_endpoint.backend_app(service)
        boto3.client(service, region_name="us-east-1")  # loads the model into the default session's cache
        aws_wire.service_model(service)


def aws_environment(port: int) -> dict[str, str]:
    """What both sides of an AWS job see: fake credentials, and the job's AWS endpoint for every service."""
    return {**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}


def bind_aws_endpoint() -> socket.socket:
    """The endpoint's listening socket, bound before the candidate exists (so the candidate cannot take its port)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


def serve_aws_endpoint(listener: socket.socket, control: socket.socket, job: dict[str, Any], candidate_uid: int, check_uid: int) -> None:
    """In the endpoint's own process: never returns."""
    from codegen_eval.grading import aws_endpoint

    services = job.get("services") or AWS_SERVICES
    aws_endpoint.serve(listener, control, list(services), warm_apps, candidate_uid, check_uid)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job that runs trusted code over untrusted data (a pattern), in one isolated process."""
    jobs = {"regex": _regex, "regex_attack": _regex_attack, "regex_equivalence": _regex_equivalence, "probe": _probe}
    return jobs[job["kind"]](job)


def _fail(message: str, **details: Any) -> dict[str, Any]:
    return {"status": "TEST_FAIL", "message": message, "details": details}


# --- python: the candidate's process ---------------------------------------------------------------------


def serve_candidate(sock: socket.socket, code: str) -> None:
    """In the candidate's own process: load its code, then answer the check's calls until it hangs up.

    Nothing here is trusted by the check: whatever this process sends is only "what the candidate
    answered", decoded on the other side as plain data.
    """
    namespace: dict[str, Any] = {"__name__": "candidate"}
    try:
        exec(compile(code, "<candidate>", "exec"), namespace)  # noqa: S102 (the sandboxed candidate)
    except BaseException as exc:  # noqa: BLE001 (an exit at import is an outcome too)
        _reply(sock, {"raised": _exception(exc, {"<candidate>": code})})
        return
    functions = sorted(name for name, value in namespace.items() if callable(value) and not name.startswith("__"))
    _reply(sock, {"loaded": functions})
    while (request := wire.receive(sock)) is not None:
        function = namespace.get(request.get("name"))
        if not callable(function):
            _reply(sock, {"missing": str(request.get("name"))})
            continue
        try:
            value = function(*wire.decode(request["args"]), **wire.decode(request["kwargs"]))
        except BaseException as exc:  # noqa: BLE001
            _reply(sock, {"raised": _exception(exc, {"<candidate>": code})})
            continue
        try:
            encoded = {"returned": wire.encode(value)}
        except (wire.WireError, RecursionError) as exc:
            encoded = {"unsupported": str(exc)}
        _reply(sock, encoded)


def _reply(sock: socket.socket, message: dict[str, Any]) -> None:
    """Flush what the candidate printed first, so the report's output tail is complete when the check ends."""
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 (a candidate may have replaced or closed them)
            pass
    wire.send(sock, message)


def _exception(exc: BaseException, sources: dict[str, str]) -> dict[str, Any]:
    kind = type(exc)
    described: dict[str, Any] = {"type": kind.__qualname__, "module": kind.__module__, "text": _describe(exc, sources)}
    try:
        described["message"] = str(exc)[:2000]
    except Exception:  # noqa: BLE001 (a hostile __str__)
        described["message"] = ""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):  # botocore's ClientError
        error = response["Error"]
        described["aws_error"] = {"Code": str(error.get("Code", "")), "Message": str(error.get("Message", ""))}
        described["operation"] = str(getattr(exc, "operation_name", "") or "")
    return described


# --- python: the check's process (trusted) ------------------------------------------------------------------


class CandidateFailure(BaseException):
    """The candidate did not answer a call normally: it exited, was killed, broke the protocol or
    returned something that is not plain data. A BaseException, so a check's `except Exception`
    cannot swallow it; and the verdict is TEST_FAIL even if a check swallows it anyway."""


class CandidateError(Exception):
    """The candidate raised an exception that is not a builtin one (nor botocore's ClientError)."""


class Candidate:
    """The check's handle on one function of the candidate: calls cross the process boundary as plain data."""

    def __init__(self, channel: Channel, name: str):
        self._channel, self._name = channel, name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._channel.call(self._name, args, kwargs)

    def __repr__(self) -> str:
        return f"<candidate {self._name}>"


class Channel:
    """The check's side of the socket to the candidate's process."""

    def __init__(self, sock: socket.socket, pid: int):
        self.sock, self.pid = sock, pid
        self.failure: str | None = None  # set once the candidate misbehaves; sticks for the whole job

    def load(self) -> list[str]:
        """The functions the candidate's module defines, once its code has run."""
        reply = self._receive("while its code was loaded")
        if type(reply.get("loaded")) is list:
            return [name for name in reply["loaded"] if type(name) is str]
        self._raise_from(reply, "when loaded")
        raise AssertionError("unreachable")

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self.failure:
            raise CandidateFailure(self.failure)
        wire.send(self.sock, {"name": name, "args": wire.encode(args), "kwargs": wire.encode(kwargs)})
        reply = self._receive(f"during the call {name}(...)")
        if "returned" in reply:
            try:
                return wire.decode(reply["returned"])
            except wire.WireError as exc:
                self._fail(f"{name}() sent back malformed data: {exc}")
        if "unsupported" in reply:
            self._fail(f"{name}() returned a value that is not plain data: {_text(reply['unsupported'])}")
        if "missing" in reply:
            raise NameError(f"the candidate defines no function {name!r}")
        self._raise_from(reply, f"in {name}(...)")
        raise AssertionError("unreachable")

    def _receive(self, when: str) -> dict[str, Any]:
        try:
            reply = wire.receive(self.sock)
        except wire.WireError as exc:
            self._fail(f"the candidate broke the call protocol {when}: {exc}")
        if reply is None:
            self._fail(f"the candidate's process ended {when} ({_exit_of(self.pid)})")
        return reply  # type: ignore[return-value]

    def _raise_from(self, reply: dict[str, Any], where: str) -> None:
        raised = reply.get("raised")
        if type(raised) is not dict:
            self._fail(f"the candidate answered {where} with an unknown message")
        error = _rebuild(raised)
        if error is None:  # SystemExit, KeyboardInterrupt and other non-Exceptions end the call abnormally
            self._fail(f"the candidate raised {_text(raised.get('text'))} {where}")
        raise error  # type: ignore[misc]

    def _fail(self, message: str) -> None:
        self.failure = self.failure or message
        raise CandidateFailure(message)


def _rebuild(raised: dict[str, Any]) -> Exception | None:
    """An exception of the same builtin type (or a ClientError with the same code) for the check to catch;
    None for a non-Exception (an exit)."""
    import builtins

    name, module, message = _text(raised.get("type")), _text(raised.get("module")), _text(raised.get("message"))
    cls = getattr(builtins, name, None) if module == "builtins" else None
    if isinstance(cls, type) and issubclass(cls, BaseException) and not issubclass(cls, Exception):
        return None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:  # noqa: BLE001 (builtins that need more arguments)
            pass
    aws_error = raised.get("aws_error")
    if type(aws_error) is dict:
        from botocore.exceptions import ClientError

        error = {"Code": _text(aws_error.get("Code")), "Message": _text(aws_error.get("Message"))}
        return ClientError({"Error": error}, _text(raised.get("operation")) or "Unknown")  # type: ignore[arg-type]
    return CandidateError(f"{module}.{name}: {message}")


def _text(value: Any) -> str:
    return value[:2000] if type(value) is str else ""


def _exit_of(pid: int) -> str:
    import time

    from codegen_eval.grading.zygote import describe_exit  # real-time signals have no Signals member

    for _ in range(200):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return describe_exit(status)
        time.sleep(0.005)
    return "it closed its end of the channel"


def run_check(job: dict[str, Any], channel: Channel, aws: Any = None) -> dict[str, Any]:
    """In the trusted process: the case's `check(candidate)`, or `check(candidate, aws)` for a check that
    reads the candidate's AWS requests, against the candidate's process."""
    sources = {"<check>": job["check"]}
    try:
        defined = channel.load()
    except CandidateFailure as exc:
        return _fail(f"the code did not load: {exc}")
    except Exception as exc:  # noqa: BLE001 (the module raised while it was loaded)
        return _fail(f"the code raised when loaded: {exc}")
    if job["entry_point"] not in defined:
        return _fail(f"no function named {job['entry_point']!r} is defined")
    namespace: dict[str, Any] = {"__name__": "check"}
    # Only the entry point crosses from the candidate. HumanEval's tests may call helpers of the task's own
    # module (poly, encode_cyclic): the check gets the reference's definitions, trusted code, never the candidate's.
    if job.get("helpers"):
        exec(compile(job["helpers"], "<helpers>", "exec"), namespace)  # noqa: S102 (the dataset's own code)
    exec(compile(job["check"], "<check>", "exec"), namespace)  # noqa: S102 (our own test code)
    arguments: list[Any] = [Candidate(channel, job["entry_point"])]
    namespace.setdefault(job["entry_point"], arguments[0])  # HumanEval's checks may call it by its name too
    if _wants_aws(namespace["check"]):
        if aws is None:
            return {"status": "SANDBOX_ERROR", "message": "check(candidate, aws) needs an AWS case (tests.aws true)"}
        arguments.append(aws)
    try:
        namespace["check"](*arguments)
    except AssertionError as exc:
        result = _fail(f"assertion failed: {_describe(exc, sources)}")
    except CandidateFailure as exc:
        result = _fail(str(exc))
    except BaseException as exc:  # noqa: BLE001
        result = _fail(_describe(exc, sources))
    else:
        result = {"status": "PASS", "message": "check(candidate) passed"}
    if channel.failure and result["status"] == "PASS":  # the check swallowed the failure: never a PASS
        result = _fail(channel.failure)
    if aws is not None and aws.failure and result["status"] == "PASS":
        result = _fail(aws.failure)
    return result


def _wants_aws(check: Any) -> bool:
    import inspect

    return len(inspect.signature(check).parameters) >= 2


def _describe(exc: BaseException, sources: dict[str, str]) -> str:
    """The exception and where it happened, quoting the line of the check or the candidate."""
    lines = {name: text.splitlines() for name, text in sources.items()}
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if frame.filename in lines and frame.lineno and frame.lineno <= len(lines[frame.filename]):
            line = lines[frame.filename][frame.lineno - 1].strip()
            where = f" at {frame.filename.strip('<>')} line {frame.lineno}: {line}"
            break
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001
        text = ""
    return f"{type(exc).__name__}{': ' + text[:300] if text else ''}{where}"


def _probe(job: dict[str, Any]) -> dict[str, Any]:
    """What this sandbox uid cannot read of the files grading needs (the self-test names them)."""
    unreadable = []
    for path in job["paths"]:
        try:
            if os.path.isdir(path):
                os.listdir(path)
            else:
                with open(path, "rb") as f:
                    f.read(1)
        except OSError as exc:
            unreadable.append(f"{path}: {exc.strerror}")
    return {"status": "PASS", "details": {"uid": os.getuid(), "unreadable": unreadable}}


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


def _anchored_body(pattern: str) -> tuple[str, bool, str] | None:
    """(body, anchored at the start, end anchor) of a pattern: the end anchor is "\\Z", "$" or "".
    None when a `|` at the top level makes the anchors belong to one branch only."""
    start = 2 if pattern.startswith("\\A") else 1 if pattern.startswith("^") else 0
    # "\\Z" ends it, or a "$" not escaped (after an even run of backslashes)
    end = 2 if pattern.endswith("\\Z") else 1 if pattern.endswith("$") and not _odd_backslashes(pattern[:-1]) else 0
    body = pattern[start : len(pattern) - end]
    if (start or end) and _top_level_bar(body):
        return None
    return body, bool(start), pattern[len(pattern) - end :] if end else ""


def _odd_backslashes(text: str) -> bool:
    return (len(text) - len(text.rstrip("\\"))) % 2 == 1


def _top_level_bar(body: str) -> bool:
    """Whether `body` has a `|` outside every group and character class."""
    depth, in_class, i = 0, False, 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            i += 2
            continue
        if in_class:
            in_class = char != "]" or body[i - 1] == "["
        elif char == "[":
            in_class = True
            if body[i + 1 : i + 2] == "^":
                i += 1
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            return True
        i += 1
    return False


def _language(pattern: str, mode: str) -> str | None:
    """A pattern for interegular whose language is the set of strings `re.<mode>(pattern, s)` accepts:
    under re.search an unanchored side may be surrounded by anything, and "$" also matches before a
    final newline; under re.fullmatch the anchors at the ends change nothing."""
    parts = _anchored_body(pattern)
    if parts is None:
        return None
    body, start, end = parts
    if mode == "fullmatch":
        return body
    anything = "[\\s\\S]*"
    return (("" if start else anything) + f"(?:{body})"
            + {"\\Z": "", "$": "\\n?", "": anything}[end])


def _equivalence(candidate: str, expected: str | None, mode: str = "search") -> dict[str, Any]:
    """Whether two patterns accept the same strings under `mode` (re.search or re.fullmatch), with
    strings that tell them apart, each confirmed by `re` itself."""
    if not expected:
        return {"checked": False, "reason": "no expected pattern"}
    languages = _language(candidate, mode), _language(expected, mode)
    if None in languages:
        return {"checked": False, "reason": "an anchor applies to one branch of a top-level |"}
    try:
        import interegular

        cand, exp = (interegular.parse_pattern(b).to_fsm() for b in languages)
        extra = _examples(cand.difference(exp), candidate, expected, True, mode=mode)
        missing = _examples(exp.difference(cand), candidate, expected, False, mode=mode)
    except Exception as exc:  # noqa: BLE001 (backreferences, lookbehind ...)
        return {"checked": False, "reason": f"unsupported by interegular: {type(exc).__name__}: {exc}"[:300]}
    return {"checked": True, "equivalent": not extra and not missing, "accepted_not_expected": extra, "expected_not_accepted": missing}


def _examples(fsm: Any, candidate: str, expected: str, candidate_accepts: bool, limit: int = 5, mode: str = "search") -> list[str]:
    """Up to `limit` strings from `fsm`, each confirmed with `re` (interegular is not exact on everything).

    A shortest string to each accepting state, by a search over states: interegular's own `strings()`
    widens every prefix level by level, exponential once the language starts with "anything"."""
    found = []
    accepts = re.search if mode == "search" else re.fullmatch
    for text in _shortest_strings(fsm, 200):
        if len(found) >= limit:
            break
        if bool(accepts(candidate, text)) == candidate_accepts and bool(accepts(expected, text)) != candidate_accepts:
            found.append(text)
    return found


def _shortest_strings(fsm: Any, most: int) -> list[str]:
    from collections import deque

    chars = {}
    for transition, symbols in fsm.alphabet.by_transition.items():
        plain = sorted(c for c in symbols if isinstance(c, str))
        chars[transition] = [*plain[:2], *([] if plain else ["\x00"])]  # "anything else": a char no class names
    paths, queue, found = {fsm.initial: ""}, deque([fsm.initial]), []
    while queue and len(found) < most:
        state = queue.popleft()
        if state in fsm.finals:
            found.append(paths[state])
        for transition, target in sorted(fsm.map.get(state, {}).items()):
            for char in chars.get(transition, []):
                text = paths[state] + char
                if target not in paths:
                    paths[target] = text
                    queue.append(target)
                elif target in fsm.finals and len(found) + len(queue) < most:
                    found.append(text)  # another string into an accepting state
    return found
