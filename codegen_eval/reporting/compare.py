"""Comparing two runs: per-case verdict and score changes, pass-rate changes, and a paired test.

The paired test is McNemar's exact test on the shared cases' pass/fail outcomes: only the cases that
changed carry information, and under "no difference" each change is equally likely to go either way.

Results are paired by case (and candidate) and sample. Two single-model runs are paired whatever their
models (comparing one model with another is what such a comparison is for); when either run has
several models, the model is part of the pairing too, so each model is compared with itself.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel

from codegen_eval.reporting.report import PAGES

from codegen_eval.reporting.runs import RESULTS, run_models
from codegen_eval.reporting.results import Summary
from codegen_eval.reporting.statistics import mcnemar_exact


class CaseDelta(BaseModel):
    id: str
    format: str
    difficulty: str
    verdict_a: str
    verdict_b: str
    score_a: float | None
    score_b: float | None
    change: str  # regression, improvement, changed, same

    @property
    def score_delta(self) -> float | None:
        return None if self.score_a is None or self.score_b is None else round(self.score_b - self.score_a, 2)


class Comparison(BaseModel):
    run_a: str
    run_b: str
    shared: int
    only_a: int
    only_b: int
    deltas: list[CaseDelta]
    pass_rates: dict[str, dict[str, tuple[float, float, int]]]  # group -> name -> (rate A, rate B, cases)
    regressions: int
    improvements: int
    mcnemar_p: float


def compare_runs(run_a: Path, run_b: Path) -> Comparison:
    by_model = len(run_models(run_a)) > 1 or len(run_models(run_b)) > 1
    a, b = _outcomes(run_a, by_model), _outcomes(run_b, by_model)
    shared = [key for key in a if key in b]
    deltas = [_delta(a[key], b[key]) for key in shared]
    order = {"regression": 0, "improvement": 1, "changed": 2, "same": 3}
    deltas.sort(key=lambda d: (order[d.change], -abs(d.score_delta or 0), d.id))
    regressions = sum(d.change == "regression" for d in deltas)
    improvements = sum(d.change == "improvement" for d in deltas)
    return Comparison(
        run_a=run_a.name, run_b=run_b.name, shared=len(shared), only_a=len(a) - len(shared), only_b=len(b) - len(shared),
        deltas=deltas, pass_rates=_pass_rates(deltas), regressions=regressions, improvements=improvements,
        mcnemar_p=round(mcnemar_exact(regressions, improvements), 6),
    )


def write_comparison(run_a: Path, run_b: Path, out: Path | None = None, comparison: Comparison | None = None) -> Path:
    """The comparison page of two runs (`comparison`, when the caller has already compared them)."""
    comparison = comparison or compare_runs(run_a, run_b)
    summaries = [Summary.model_validate_json((run / "summary.json").read_text()) for run in (run_a, run_b)]
    html = PAGES.get_template("compare.html.j2").render(c=comparison, a=summaries[0], b=summaries[1])
    path = out or run_b / f"compare-{run_a.name}.html"
    path.write_text(html, encoding="utf-8")
    return path


class Outcome(NamedTuple):
    """What a comparison needs of a case: a few fields, not the whole result (runs can be 20,000 cases)."""

    key: str
    format: str
    difficulty: str
    verdict: str
    score: float | None


def _outcomes(run_dir: Path, by_model: bool) -> dict[str, Outcome]:
    outcomes = {}
    with (run_dir / RESULTS).open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                key = r["id"] + (f"#{r['cid']}" if r.get("cid") else "")
                key += f" [{r.get('model')}]" if by_model else ""
                key += f" sample {r['sample']}" if r.get("sample") else ""
                outcomes[key] = Outcome(key, r["format"], r["difficulty"], r["verdict"], r["score"])
    return outcomes


def _delta(a: Outcome, b: Outcome) -> CaseDelta:
    passed_a, passed_b = a.verdict == "PASS", b.verdict == "PASS"
    change = ("regression" if passed_a and not passed_b else "improvement" if passed_b and not passed_a
              else "changed" if (a.verdict, a.score) != (b.verdict, b.score) else "same")
    return CaseDelta(id=a.key, format=a.format, difficulty=a.difficulty, verdict_a=a.verdict, verdict_b=b.verdict,
                     score_a=a.score, score_b=b.score, change=change)


def _pass_rates(deltas: list[CaseDelta]) -> dict[str, dict[str, tuple[float, float, int]]]:
    groups: dict[str, dict[str, list[CaseDelta]]] = {"format": defaultdict(list), "difficulty": defaultdict(list), "all": defaultdict(list)}
    for d in deltas:
        groups["format"][d.format].append(d)
        groups["difficulty"][d.difficulty].append(d)
        groups["all"]["all cases"].append(d)
    return {
        group: {name: (_rate(ds, "verdict_a"), _rate(ds, "verdict_b"), len(ds)) for name, ds in sorted(members.items())}
        for group, members in groups.items()
    }


def _rate(deltas: list[CaseDelta], field: str) -> float:
    return round(sum(getattr(d, field) == "PASS" for d in deltas) / len(deltas), 4) if deltas else 0.0
