"""Proving a dataset before any model is paid to answer it.

A case is only as good as its reference and tests. Here each reference (`expected`) must pass every
gating check of its own case in the sandbox, as BigCodeBench proves its ground truth; `codegen-eval
validate` also asks that a stub answer fails the tests (else they are trivial) and that each
deliberately broken variant fails them. Each verdict is cached in the run's cache, keyed by the code
tried, the case's reference and tests, and `checker_fingerprint()`, so a second proof costs a cache read.
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from codegen_eval.dataset import Case, DatasetError, PythonTests, numbered_cases, numbered_outputs, read_cases
from codegen_eval.grading.checks import CheckStatus, needs_sandbox, run_checks
from codegen_eval.grading.fingerprint import checker_fingerprint
from codegen_eval.grading.sandbox import Sandbox
from codegen_eval.models.cache import CacheError, CallCache, canonical_json

PROOF_VERSION = 1  # bump when what a stored proof means changes
UNSETTLED = {CheckStatus.TIMEOUT, CheckStatus.SANDBOX_ERROR}  # may pass next time: never cached
# Grammar-valid policies that allow everything and nothing: tests that either passes check no access.
ALLOW_ALL = '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}'
ALLOW_NOTHING = '{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}'
log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class Attempt(BaseModel):
    """One piece of code against one case's checks; what is stored is all but `cached`."""

    passed: bool  # every gating check passed
    failures: list[str] = []  # "check STATUS: message" for each failing gating check
    unsettled: bool = False  # a check timed out or the sandbox failed: not a verdict on the code
    cached: bool = False


def attempt(case: Case, code: str, sandbox: Sandbox, cache: CallCache | None) -> Attempt:
    """Run `code` through the case's checks, or read the verdict stored for exactly this code, case and checker."""
    key = proof_key(case, code)
    stored = cache.get_note(key) if cache is not None else None
    if stored is not None:
        return Attempt.model_validate_json(stored).model_copy(update={"cached": True})
    checks = run_checks(case, code, sandbox)
    if any(c.status in UNSETTLED for c in checks):  # a busy machine: one more try
        checks = run_checks(case, code, sandbox)
    failing = [c for c in checks if c.gate and not c.passed]
    result = Attempt(
        passed=not failing,
        failures=[_one_line(f"{c.name} {c.status.value}: {c.message}") for c in failing],
        unsettled=any(c.status in UNSETTLED for c in checks),
    )
    if cache is not None and not result.unsettled:  # (an empty CallCache is falsy)
        try:
            cache.set_note(key, result.model_dump_json(exclude={"cached"}))
        except CacheError:
            pass  # the proof stands; it is only not remembered
    return result


def proof_key(case: Case, code: str) -> str:
    """Everything a check's verdict depends on: the code, the case's format, reference and tests, the checker."""
    basis = {"v": PROOF_VERSION, "checker": checker_fingerprint(), "format": case.format, "expected": case.expected,
             "tests": case.tests, "code": code}
    return "proof:" + hashlib.sha256(canonical_json(basis).encode()).hexdigest()


def stubs(case: Case) -> list[str]:
    """Answers that know nothing of the task; a case's tests must fail each of them."""
    if case.format == "python":
        entry_point = PythonTests.model_validate(case.tests).entry_point
        return [f"def {entry_point}(*args, **kwargs):\n    pass\n"]
    if case.format == "json":
        return [ALLOW_ALL, ALLOW_NOTHING]
    return ["^$", "(?s).*"]


@dataclass
class Tally:
    """Per-format counts for the summary table."""

    cases: int = 0
    proven: int = 0  # references that pass their own tests
    with_tests: int = 0
    non_trivial: int = 0  # tests every stub fails
    broken: int = 0  # broken variants tried
    broken_failing: int = 0  # ... that fail, as they must


@dataclass
class Proof:
    problems: list[tuple[str, int, str]] = field(default_factory=list)  # (file, line, "field '...': message")
    unsettled: list[str] = field(default_factory=list)  # references that timed out twice (`run` goes on)
    tallies: dict[str, Tally] = field(default_factory=dict)
    sandbox_runs: int = 0  # attempts run in the sandbox
    from_cache: int = 0  # attempts answered by the cache

    def lines(self) -> list[str]:
        """One "file:line: field '...': message" per problem, file by file, in line order."""
        files = list(dict.fromkeys(path for path, _, _ in self.problems))
        ordered = sorted(self.problems, key=lambda p: (files.index(p[0]), p[1]))
        return [f"{path}:{line}: {message}" if line else f"{path}: {message}" for path, line, message in ordered]

    def count(self, result: Attempt) -> None:
        if result.cached:
            self.from_cache += 1
        else:
            self.sandbox_runs += 1


def prove_references(path: str | Path, sandbox: Sandbox, cache: CallCache | None, advance: Callable[[], None] | None = None) -> Proof:
    """Every reference in a dataset `dataset_ids` accepted, against its own tests; raises DatasetError
    naming each one that fails. Reads the cases as a stream, so memory does not grow with the dataset.

    A reference that timed out twice (a machine too busy, not a wrong reference) is logged, not fatal:
    `validate` is where it counts as a problem."""
    proof = Proof()
    _prove(numbered_cases(path), str(path), sandbox, cache, proof, with_stubs=False, advance=advance)
    settled = [p for p in proof.problems if p[2] not in proof.unsettled]
    for _, _, message in proof.problems:
        if message in proof.unsettled:
            log.warning("reference not proven, the run goes on: %s", message)
    if settled:
        raise DatasetError(Proof(problems=settled).lines())
    return proof


def validate(
    path: str | Path, broken: str | Path | None, sandbox: Sandbox, cache: CallCache | None,
    advance: Callable[[], None] | None = None,
) -> Proof:
    """Everything `run` rejects, plus: references proven, tests not trivial, broken variants failing.
    Reports every problem (never raises on a bad dataset)."""
    proof = Proof()
    numbered, problems = read_cases(path)
    proof.problems += [_split(problem) for problem in problems]
    _prove(numbered, str(path), sandbox, cache, proof, with_stubs=True, advance=advance)
    if broken is not None:
        _prove_broken(Path(broken), [case for _, case in numbered], sandbox, cache, proof, advance)
    return proof


def _prove(
    numbered: Iterable[tuple[int, Case]], path: str, sandbox: Sandbox, cache: CallCache | None, proof: Proof,
    with_stubs: bool, advance: Callable[[], None] | None,
) -> None:
    def prove_reference(item: tuple[int, Case]) -> tuple[int, Case, Attempt, list[tuple[str, Attempt]]]:
        lineno, case = item
        reference = attempt(case, case.expected, sandbox, cache)
        tried = [(stub, attempt(case, stub, sandbox, cache)) for stub in stubs(case)] if with_stubs and case.tests is not None else []
        if advance:
            advance()
        return lineno, case, reference, tried

    for lineno, case, reference, tried in _bounded_map(prove_reference, numbered, sandbox.slots, inline=_no_sandbox_job):
        tally = proof.tallies.setdefault(case.format, Tally())
        tally.cases += 1
        proof.count(reference)
        if reference.passed:
            tally.proven += 1
        else:
            verb = "could not be proven" if reference.unsettled else "fails its own tests"
            message = f"field 'expected': {verb}: {'; '.join(reference.failures)}"
            proof.problems.append((path, lineno, message))
            if reference.unsettled:
                proof.unsettled.append(message)
        if case.tests is None or not with_stubs:
            continue
        tally.with_tests += 1
        for _, result in tried:
            proof.count(result)
        passing = [stub for stub, result in tried if result.passed]
        if passing:
            proof.problems.append((path, lineno, f"field 'tests': trivial: the stub answer {passing[0]!r} passes them"))
        else:
            tally.non_trivial += 1


def _prove_broken(
    broken: Path, cases: list[Case], sandbox: Sandbox, cache: CallCache | None, proof: Proof, advance: Callable[[], None] | None,
) -> None:
    from codegen_eval.generation import recorded

    try:
        variants = numbered_outputs(broken, cases)
    except DatasetError as exc:
        proof.problems += [_split(problem) for problem in exc.problems]
        return

    def prove_variant(item: tuple[int, Case, object]) -> tuple[int, Case, str, Attempt]:
        lineno, case, output = item
        code = recorded(case, output.output).code  # type: ignore[attr-defined]
        result = attempt(case, code, sandbox, cache)
        if advance:
            advance()
        return lineno, case, code, result

    for lineno, case, code, result in _bounded_map(prove_variant, variants, sandbox.slots, inline=_no_sandbox_job):
        tally = proof.tallies.setdefault(case.format, Tally())
        tally.broken += 1
        proof.count(result)
        if code.strip() == case.expected.strip():
            proof.problems.append((str(broken), lineno, f"field 'output': the broken variant of {case.id!r} is its reference"))
        elif result.passed:
            proof.problems.append((str(broken), lineno, f"field 'output': the broken variant of {case.id!r} passes every test"))
        else:
            tally.broken_failing += 1


def _bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int, inline: Callable[[T], bool] = lambda item: False) -> Iterator[R]:
    """`fn` over `items` on `workers` threads, in order, with a bounded number in flight (items are read lazily).

    Items for which `inline` holds run in this thread instead: work with no sandbox job is CPU work,
    and handed to the pool it only contends for the GIL (400 references without tests took 0.40 s
    through 2 threads, 0.18 s in a row)."""
    window: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="proof") as pool:
        for item in items:
            window.append(_done(fn, item) if inline(item) else pool.submit(fn, item))
            if len(window) >= workers * 4:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def _no_sandbox_job(item: tuple) -> bool:
    """For items (line number, case, ...): the case's checks run no job in the sandbox."""
    return not needs_sandbox(item[1])


def _done(fn: Callable[[T], R], item: T) -> Future[R]:
    """`fn(item)`, run now, as a finished future: its result or its error comes out in turn."""
    future: Future[R] = Future()
    try:
        future.set_result(fn(item))
    except Exception as exc:  # raised where the pool's would be: at .result(), in order
        future.set_exception(exc)
    return future


def _split(problem: str) -> tuple[str, int, str]:
    """A loader's "file:line: message" as (file, line, message); line 0 for "file: message"."""
    head, _, rest = problem.partition(": ")
    path, _, line = head.rpartition(":")
    if path and line.isdigit():
        return path, int(line), rest
    return head, 0, rest


def _one_line(text: str, limit: int = 300) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
