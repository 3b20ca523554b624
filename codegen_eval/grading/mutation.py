"""Mutation adequacy of a dataset's tests (`codegen-eval validate --mutants`).

Each case's reference is mutated (grading/mutants.py) and every mutant graded by the case's own checks,
through the same cached path that proves the reference (proof.attempt). A mutant the checks fail is
killed; one they pass survives, unless there is evidence that it is equivalent to the reference: the
same language (regex, interegular, under re.search), the same decisions of the IAM evaluator on the
generated request space (policies, grading/differential.py), or a reviewed reason in
`datasets/equivalent_mutants.jsonl` ({"id", "where", "reason"} per line). The score of a case is
killed / (mutants not shown equivalent); a TIMEOUT or sandbox error twice over is reported, not counted.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from codegen_eval.dataset import Case, PolicyTests, RegexTests, numbered_cases
from codegen_eval.grading.proof import Attempt, _bounded_map, attempt, proof_key
from codegen_eval.grading import differential, iam
from codegen_eval.grading.checks import EQUIVALENCE_LIMITS, access
from codegen_eval.grading.fingerprint import checker_fingerprint
from codegen_eval.grading.mutants import OPERATORS_VERSION, Mutant, diff, mutants
from codegen_eval.grading.sandbox import Sandbox
from codegen_eval.models.cache import CacheError, CallCache, canonical_json

CASE_FLOOR = 0.90
DATASET_FLOOR = 0.95
REVIEWED = Path(__file__).resolve().parents[2] / "datasets" / "equivalent_mutants.jsonl"


class Reviewed(BaseModel):
    id: str
    where: str
    reason: str


@dataclass
class MutantVerdict:
    mutant: Mutant
    outcome: str  # killed, survived, equivalent, unsettled
    evidence: str = ""  # why equivalent, or what killed it
    probes_kill: bool | None = None  # policies: whether the hand-written probes alone fail it


@dataclass
class CaseAdequacy:
    lineno: int
    case: Case
    verdicts: list[MutantVerdict] = field(default_factory=list)

    def count(self, outcome: str) -> int:
        return sum(v.outcome == outcome for v in self.verdicts)

    @property
    def scored(self) -> int:
        return self.count("killed") + self.count("survived")

    @property
    def score(self) -> float | None:
        return self.count("killed") / self.scored if self.scored else None

    @property
    def below_floor(self) -> bool:
        return self.score is not None and self.score < CASE_FLOOR


@dataclass
class Adequacy:
    path: str
    cases: list[CaseAdequacy] = field(default_factory=list)

    def totals(self, fmt: str | None = None) -> tuple[int, int]:
        """(killed, mutants not shown equivalent nor unsettled) over the cases of `fmt` (all when None)."""
        chosen = [c for c in self.cases if fmt is None or c.case.format == fmt]
        return sum(c.count("killed") for c in chosen), sum(c.scored for c in chosen)

    def score(self, fmt: str | None = None) -> float | None:
        killed, scored = self.totals(fmt)
        return killed / scored if scored else None

    @property
    def failing(self) -> bool:
        overall = self.score()
        return any(c.below_floor for c in self.cases) or (overall is not None and overall < DATASET_FLOOR)

    def lines(self) -> list[str]:
        """Per case: its score, then each surviving (and unsettled) mutant with what changed."""
        out = []
        for c in self.cases:
            score = "-" if c.score is None else f"{c.score:.2f}"
            flag = f" BELOW FLOOR {CASE_FLOOR:.2f}" if c.below_floor else ""
            extra = "".join(f", {c.count(o)} {o}" for o in ("equivalent", "unsettled") if c.count(o))
            out.append(f"{self.path}:{c.lineno}: {c.case.id}: mutation score {score} ({c.count('killed')}/{c.scored} killed{extra}){flag}")
            for v in c.verdicts:
                if v.outcome in ("survived", "unsettled"):
                    out.append(f"    {v.outcome} [{v.mutant.operator}] {v.mutant.where}")
                    out += ["      " + line for line in diff(c.case.expected, v.mutant.code, c.case.format).splitlines()[:12]]
        return out


def measure(path: str | Path, sandbox: Sandbox, cache: CallCache | None, done: Callable[[CaseAdequacy], None] | None = None,
            reviewed: Path = REVIEWED) -> Adequacy:
    """Every case's mutants graded by its checks (cases with tests only), in file order."""
    known = _reviewed(reviewed)
    result = Adequacy(path=str(path))

    def measure_case(item: tuple[int, Case]) -> CaseAdequacy:
        lineno, case = item
        found = CaseAdequacy(lineno=lineno, case=case)
        for mutant in mutants(case):
            found.verdicts.append(_verdict(case, mutant, sandbox, cache, known))
        if done:
            done(found)
        return found

    with_tests = ((n, c) for n, c in numbered_cases(path) if c.tests is not None)
    result.cases = list(_bounded_map(measure_case, with_tests, sandbox.slots))
    return result


def _verdict(case: Case, mutant: Mutant, sandbox: Sandbox, cache: CallCache | None, known: dict[tuple[str, str], str]) -> MutantVerdict:
    probes = _probes_kill(case, mutant.code) if case.format == "json" else None
    tried = _strings_fail(case, mutant.code, sandbox, cache) if case.format == "regex" else None
    tried = tried or attempt(case, mutant.code, sandbox, cache)
    # A ReDoS check timing out on attack strings is a verdict on the pattern (the reference passed it);
    # any other TIMEOUT or sandbox error says more about the machine: counted neither way.
    if tried.unsettled and not any(f.startswith("redos TIMEOUT") for f in tried.failures):
        return MutantVerdict(mutant, "unsettled", "; ".join(tried.failures), probes)
    if not tried.passed:
        return MutantVerdict(mutant, "killed", "; ".join(tried.failures), probes)
    reason = known.get((case.id, mutant.where)) or _equivalence(case, mutant, sandbox, cache)
    return MutantVerdict(mutant, "equivalent" if reason else "survived", reason or "", probes)


def _strings_fail(case: Case, code: str, sandbox: Sandbox, cache: CallCache | None) -> Attempt | None:
    """A regex mutant that misclassifies a test string fails the gating `tests` check whatever the
    others say: decided by that one sandbox job (the ReDoS and equivalence jobs, up to 8 s, skipped)."""
    key = proof_key(case, code)
    stored = cache.get_note(key) if cache is not None else None
    if stored is not None:
        return Attempt.model_validate_json(stored).model_copy(update={"cached": True})
    tests = RegexTests.model_validate(case.tests)
    outcome = sandbox.run({"kind": "regex", "pattern": code, "match": tests.match, "no_match": tests.no_match})
    if outcome.status != "TEST_FAIL":
        return None
    result = Attempt(passed=False, failures=[f"tests TEST_FAIL: {outcome.message}"[:300]])
    if cache is not None:
        try:
            cache.set_note(key, result.model_dump_json(exclude={"cached"}))
        except CacheError:
            pass
    return result


def _probes_kill(case: Case, code: str) -> bool:
    """Whether the case's hand-written probes alone (no differential check) fail this policy."""
    policy = json.loads(code)
    tests = PolicyTests.model_validate(case.tests)
    if iam.grammar_errors(policy, tests.policy_type):
        return True
    return not access(policy, tests).passed


def _equivalence(case: Case, mutant: Mutant, sandbox: Sandbox, cache: CallCache | None) -> str:
    """Evidence that a surviving mutant behaves as the reference does, or ""."""
    if case.format == "json":
        return _policy_equivalence(case, json.loads(mutant.code))
    if case.format == "regex":
        return _regex_equivalence(case.expected, mutant.code, sandbox, cache)
    return ""


def _policy_equivalence(case: Case, mutant: dict) -> str:
    """The IAM evaluator's decisions on the generated request space: all three-way the same, or the
    same as the case compares them (denies as one unless it asks for explicit ones; requests it leaves free)."""
    tests = PolicyTests.model_validate(case.tests)
    strict = tests.model_copy(update={"may_allow": [], "may_deny": [], "explicit_deny": True})
    reference = json.loads(case.expected)
    try:
        exact = differential.compare_policies(mutant, reference, strict)
        if not exact.differences:
            return f"the same three-way decisions on {exact.requests} generated requests"
        if not differential.compare_policies(mutant, reference, tests).differences:
            kinds = sorted({d.kind for d in exact.differences})
            return (f"the same decisions as the case compares them on {exact.requests} generated requests; "
                    f"differs only as {', '.join(kinds)} where the case allows it (explicit_deny false, may_allow, may_deny)")
    except iam.UnsupportedCondition:
        return ""
    return ""


def _regex_equivalence(expected: str, pattern: str, sandbox: Sandbox, cache: CallCache | None) -> str:
    basis = {"v": OPERATORS_VERSION, "checker": checker_fingerprint(), "expected": expected, "pattern": pattern}
    key = "mutant-equivalence:" + hashlib.sha256(canonical_json(basis).encode()).hexdigest()
    stored = cache.get_note(key) if cache is not None else None
    if stored is not None:
        return json.loads(stored)
    outcome = sandbox.run({"kind": "regex_equivalence", "pattern": pattern, "expected": expected}, EQUIVALENCE_LIMITS)
    eq = outcome.details if outcome.status == "PASS" else {}
    reason = "the same language under re.search (interegular)" if eq.get("checked") and eq.get("equivalent") else ""
    if cache is not None and outcome.status == "PASS":
        try:
            cache.set_note(key, json.dumps(reason))
        except CacheError:
            pass
    return reason


def _reviewed(path: Path) -> dict[tuple[str, str], str]:
    if not path.exists():
        return {}
    entries = [Reviewed.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]
    return {(e.id, e.where): f"reviewed: {e.reason}" for e in entries}
