"""The CI run of several models: the embedded model in-process, the same GGUF behind a real
OpenAI-compatible server (llama_cpp.server) through the openai SDK, and a Claude model on the loopback
Messages API; five samples each at a temperature, judged by the Claude model (the embedded model is
slow: ~26 tok/s on 2 cores)."""

from __future__ import annotations

import time

import pytest

from codegen_eval.dataset import load_dataset
from codegen_eval.generation import generate
from codegen_eval.models.cache import CallCache
from codegen_eval.reporting.runs import load_results
from codegen_eval.reporting.results import Summary
from tests.conftest import CLAUDE, SEED

# The generators of the CI run: one line per backend.
CI_MODELS = [
    "local",
    "openai:qwen2.5-coder-0.5b",
    CLAUDE,
]
SAMPLES = 5


@pytest.mark.local_model
def test_several_models_with_samples_make_one_report(run, api, llama_api, tmp_path):
    started = time.perf_counter()
    run_dir = run(models=CI_MODELS, samples=SAMPLES, temperature=0.8, judge_model=CLAUDE, base_url=llama_api)
    print(f"{len(CI_MODELS)} models x 4 cases x {SAMPLES} samples: {time.perf_counter() - started:.1f} s")
    summary = Summary.model_validate_json((run_dir / "summary.json").read_text())
    assert list(summary.models) == CI_MODELS and summary.cases == len(CI_MODELS) * 4 * SAMPLES
    for model, stats in summary.models.items():
        assert stats.cases == 4 and stats.samples == SAMPLES and set(stats.pass_at_k) == {"1", "5"}
        low, high = stats.pass_rate_ci95
        assert 0 <= low <= stats.pass_rate <= high <= 1 and stats.pass_at_k["1"] <= stats.pass_at_k["5"]
    assert summary.models["local"].temperature == 0.8 and summary.models[CLAUDE].temperature is None
    assert summary.models["openai:qwen2.5-coder-0.5b"].temperature == 0.8
    local = [r for r in load_results(run_dir) if r.model == "local"]
    assert len({r.output for r in local}) > 4  # seeded sampling: the samples of a case differ
    html = (run_dir / "report.html").read_text()
    assert 'id="leaderboard"' in html and 'id="grid"' in html and 'id="pairwise"' in html and "pass@5" in html


@pytest.mark.local_model
def test_local_sampling_is_reproducible(tmp_path):
    case = load_dataset(SEED)[3]  # the regex: a short answer
    first = generate(case, "local", CallCache(tmp_path / "a"), sample=2, temperature=0.8)
    again = generate(case, "local", CallCache(tmp_path / "b"), sample=2, temperature=0.8)  # no cache: generated again
    assert first.calls == again.calls == 1 and first.code == again.code and first.temperature == 0.8
