"""The judge measured end to end: agreement with the tests in a run (one judge and several), and
`codegen-eval calibrate`, on the loopback Messages API with scripted judge scores (so every figure is
known exactly), then on the embedded model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from codegen_eval.cli import app
from codegen_eval.config import RunConfig
from codegen_eval.dataset import load_dataset
from codegen_eval.reporting.calibration import BROKEN_VARIANTS, Calibration
from codegen_eval.reporting.runs import load_results
from tests.conftest import DATASET, SEED
from tests.messages_api import Reply, prompt_of, request_kind, shape

ROOT = Path(__file__).resolve().parent.parent
HAIKU, SONNET = "claude-haiku-4-5", "claude-sonnet-4-5"
SEED_IDS = [case.id for case in load_dataset(SEED)]  # the seed lesson's four cases
BROKEN = {json.loads(line)["id"]: json.loads(line)["output"] for line in BROKEN_VARIANTS.read_text().splitlines() if line.strip()}
# The tests pass every reference and fail every broken variant (proven by tests/test_dataset_quality.py).
# Scripted scores per judge, in SEED_IDS order:
#                 references      broken variants
SCORES = {HAIKU: ([9, 9, 8, 4], [9, 2, 3, 3]), SONNET: ([9, 5, 10, 6], [9, 2, 1, 3])}


def output_in(prompt: str) -> str:
    return re.search(r"<output>\n(.*)\n</output>", prompt, re.S).group(1).strip()


def scripted(score_of) -> callable:
    """A loopback responder whose judge gives `score_of(model, output)`."""

    def respond(body: dict) -> Reply:
        assert request_kind(body) == "judge", "calibration and grading make no generation call"
        verdict = {"score": score_of(body["model"], output_in(prompt_of(body))), "reasoning": "scripted", "strengths": [], "weaknesses": []}
        return Reply(text=shape(body, json.dumps(verdict) + "\n"))

    return respond


def seed_score(model: str, output: str) -> int:
    cases = {c.id: c for c in load_dataset(SEED)}
    for i, case_id in enumerate(SEED_IDS):
        if output == cases[case_id].expected.strip():
            return SCORES[model][0][i]
        if output == BROKEN[case_id].strip():
            return SCORES[model][1][i]
    raise AssertionError(f"unexpected output {output[:60]!r}")


@pytest.fixture
def cli_env(prefect_api, api, cache_dir, monkeypatch) -> None:
    """The loopback API (key and URL), the Prefect server and the cache, for commands in subprocesses too."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))


@pytest.fixture
def seed_outputs(tmp_path: Path) -> Path:
    """Each seed case's reference (cid ref) and broken variant (cid broken), as recorded outputs."""
    cases = {c.id: c for c in load_dataset(SEED)}
    rows = [{"id": i, "cid": "ref", "output": cases[i].expected} for i in SEED_IDS] + [{"id": i, "cid": "broken", "output": BROKEN[i]} for i in SEED_IDS]
    path = tmp_path / "outputs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def labels(tmp_path: Path, seed_outputs: Path) -> Path:
    rows = [json.loads(line) for line in seed_outputs.read_text().splitlines()]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps({**r, "label": "correct" if r["cid"] == "ref" else "incorrect"}) + "\n" for r in rows))
    return path


def grade(tmp_path: Path, outputs: Path, *options: str) -> tuple[Path, str]:
    """`codegen-eval grade` in its own process (as a user runs it): Prefect's console log handler keeps
    the stream of the first in-process CliRunner, so a second flow run under CliRunner fails."""
    command = [sys.executable, "-m", "codegen_eval.cli", "grade", "--dataset", str(SEED), "--outputs", str(outputs), "--out", str(tmp_path / "runs"), *options]
    proc = subprocess.run(command, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_two_judges_median_agreement_alpha_and_disagreements(cli_env, api, tmp_path, seed_outputs):
    api.responder = scripted(seed_score)
    run_dir, output = grade(tmp_path, seed_outputs, "--judge-model", HAIKU, "--judge-model", SONNET)
    assert api.count("judge") == 16  # each judge, each output, once

    summary = json.loads((run_dir / "summary.json").read_text())
    ag = summary["judge_agreement"]
    assert summary["judge_models"] == [HAIKU, SONNET] and ag["judges"] == [HAIKU, SONNET]
    # Medians at PASS >= 8: references 9, 7, 9, 5 (tests PASS); broken 9, 2, 2, 3 (tests FAIL).
    c = ag["combined"]
    assert c["cases"] == 8 and c["threshold"] == 8
    assert c["confusion"] == {"judge_pass_tests_pass": 2, "judge_pass_tests_fail": 1, "judge_fail_tests_pass": 2, "judge_fail_tests_fail": 3}
    # observed 5/8, chance (3/8)(1/2) + (5/8)(1/2) = 1/2: kappa (5/8 - 1/2) / (1/2) = 1/4; balanced (2/4 + 3/4) / 2
    assert (c["accuracy"], c["balanced_accuracy"], c["kappa"]) == (0.625, 0.625, 0.25)
    assert c["auc"] == pytest.approx(13 / 16, abs=1e-4)  # 3.5 + 3.5 + 3 + 3 of 16 pairs (a tie counts half)
    # Haiku: references 9, 9, 8, 4; broken 9, 2, 3, 3 -> 3 1 / 1 3: kappa 1/2. Sonnet: 2 1 / 2 3 -> 1/4.
    assert ag["per_judge"][HAIKU]["kappa"] == 0.5 and ag["per_judge"][SONNET]["kappa"] == 0.25
    # alpha: squared differences 16 + 4 + 4 + 4 = 28, within 2 * 28 / 16 = 3.5; 16 values, sum 92, squares 682:
    # expected 2 (16 * 682 - 92^2) / (16 * 15) = 20.4; alpha = 1 - 3.5 / 20.4 = 169/204.
    assert ag["inter_judge_alpha"] == pytest.approx(169 / 204, abs=1e-4)
    assert ag["disputed_total"] == 1 and ag["disputed"][0]["id"] == "s3-upload-file" and ag["disputed"][0]["spread"] == 4
    # "judge PASS, tests FAIL" first, then "judge FAIL, tests PASS", each in run order.
    assert [(d["id"], d["cid"]) for d in ag["judge_pass_tests_fail"]] == [("s3-list-buckets", "broken")]
    assert [(d["id"], d["cid"]) for d in ag["judge_fail_tests_pass"]] == [("s3-upload-file", "ref"), ("regex-s3-bucket-name", "ref")]
    assert ag["low_information"] is False

    rows = {(r.id, r.cid): r for r in load_results(run_dir)}
    upload = rows[("s3-upload-file", "ref")]
    assert upload.judge.verdict.score == 7 and upload.judge_spread == 4 and upload.has_tests is True
    assert {m: j.score for m, j in upload.judges.items()} == {HAIKU: 9, SONNET: 5}
    # Judging is priced per judge: Haiku 4.5 and Sonnet 4.5 differ.
    assert summary["judging"]["calls_made"] == 16 and summary["judging"]["cost_usd"] > 0

    assert "Judge vs tests: 8 case(s) with tests, the judges' median passes at score >= 8" in output
    assert "κ 0.25" in output and "Krippendorff's α 0.83" in output and "1 case(s) with a spread >= 4" in output
    report = (run_dir / "report.html").read_text()
    section = report[report.index('id="judge-agreement"'):report.index("<h2>Cases</h2>")]
    assert section.index("judge PASS, tests FAIL") < section.index("judge FAIL, tests PASS")
    assert "Krippendorff" in section and "judge-low-information" not in section
    assert "the judges disagree" in report

    # The same run again: every judge answer comes from the cache, per judge.
    api.reset()
    again, _ = grade(tmp_path, seed_outputs, "--judge-model", HAIKU, "--judge-model", SONNET)
    assert api.count() == 0 and json.loads((again / "summary.json").read_text())["judge_agreement"] == ag


def test_a_judge_that_scores_everything_alike_is_called_uninformative(cli_env, api, tmp_path, seed_outputs):
    api.responder = scripted(lambda model, output: 9)
    run_dir, output = grade(tmp_path, seed_outputs, "--judge-model", HAIKU)
    ag = json.loads((run_dir / "summary.json").read_text())["judge_agreement"]
    assert ag["combined"]["kappa"] == 0.0 and ag["combined"]["balanced_accuracy"] == 0.5 and ag["low_information"] is True
    assert ag["inter_judge_alpha"] is None and len(ag["judge_pass_tests_fail"]) == 4
    assert "the judge's scores carry little information on this run" in output
    assert "the judge's scores carry little information on this run" in (run_dir / "report.html").read_text()


def test_calibrate_on_labels_then_a_run_uses_the_calibrated_threshold(cli_env, api, tmp_path, labels, seed_outputs):
    api.responder = scripted(seed_score)
    saved = tmp_path / "haiku.calibration.json"
    result = CliRunner().invoke(app, ["calibrate", "--judge-model", HAIKU, "--dataset", str(SEED), "--labels", str(labels), "--write", str(saved)])
    assert result.exit_code == 0, result.output
    # Haiku: correct 9, 9, 8, 4; incorrect 9, 2, 3, 3. Balanced accuracy at >= 9: 0.625, 8: 0.75, 4: 0.875,
    # 3: 0.625, 2: 0.5 -> best 4, where the table is 4 1 / 0 3: kappa (7/8 - 1/2) / (1/2) = 3/4.
    calibration = Calibration.model_validate_json(saved.read_text())
    assert (calibration.threshold, calibration.at_best.balanced_accuracy, calibration.at_best.kappa) == (4, 0.875, 0.75)
    assert (calibration.at_default.threshold, calibration.at_default.kappa) == (8, 0.5)
    assert calibration.auc == pytest.approx(13 / 16)  # 3.5 + 3.5 + 3 + 3 of 16 pairs
    assert [p.threshold for p in calibration.roc] == [10, 9, 8, 4, 3, 2] and calibration.calls_made == 8
    assert "best threshold (maximises balanced accuracy): 4" in result.output and "AUC 0.812" in result.output
    assert ">= 4: true positive rate 1.00, false positive rate 0.25" in result.output

    # Calibrating again is served from the cache; so is a run judging the same outputs.
    api.reset()
    again = CliRunner().invoke(app, ["calibrate", "--judge-model", HAIKU, "--dataset", str(SEED), "--labels", str(labels)])
    assert again.exit_code == 0 and api.count() == 0 and "0 calls made, 8 from cache" in again.output

    run_dir, output = grade(tmp_path, seed_outputs, "--judge-model", HAIKU, "--calibration", str(saved))
    assert api.count() == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    c = summary["judge_agreement"]["combined"]
    assert c["threshold"] == 4 and c["kappa"] == 0.75 and summary["judge_agreement"]["calibrated"] == [HAIKU]
    assert json.loads((run_dir / "run.json").read_text())["judge_thresholds"] == {HAIKU: 4}
    assert "passes at score >= 4 (calibrated)" in " ".join(output.split()), output
    # Scoring is unchanged by a calibration: the same verdicts as without it.
    plain, _ = grade(tmp_path, seed_outputs, "--judge-model", HAIKU)
    assert [r.verdict for r in load_results(run_dir)] == [r.verdict for r in load_results(plain)]


def test_calibrate_without_labels_uses_each_reference_and_its_broken_variant(api, tmp_path, cache_dir, monkeypatch):
    """The shipped labelled set: N references (correct) and N broken variants (incorrect). The
    scripted judge gives 9 to every reference and to the P broken Python variants, 2 to the others."""
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))
    formats = {c.id: c.format for c in load_dataset(DATASET)}
    broken = {output.strip(): case_id for case_id, output in BROKEN.items()}
    api.responder = scripted(lambda model, output: 9 if output not in broken or formats[broken[output]] == "python" else 2)
    result = CliRunner().invoke(app, ["calibrate", "--judge-model", HAIKU, "--write", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    calibration = Calibration.model_validate_json((tmp_path / "c.json").read_text())
    n, p = len(formats), sum(1 for f in formats.values() if f == "python")
    # A reference whose text is also another case's broken variant (the seed's bucket-name regex is the
    # older case's pattern with dots) is scored 2 like that variant: r such references.
    r = sum(1 for c in load_dataset(DATASET) if c.expected.strip() in broken and formats[broken[c.expected.strip()]] != "python")
    assert calibration.items == 2 * n and calibration.labels == "shipped" and api.count("judge") == 2 * n
    # At >= 9 the table is TP N-r, FN r / FP P, TN N-P; the classes are balanced (N each).
    tp, fn, fp, tn = n - r, r, p, n - p
    accuracy, chance = (tp + tn) / (2 * n), ((tp + fp) / (2 * n) + (fn + tn) / (2 * n)) / 2
    assert calibration.threshold == 9
    assert calibration.at_best.balanced_accuracy == pytest.approx((tp / n + tn / n) / 2, abs=1e-4)
    assert calibration.at_best.kappa == pytest.approx((accuracy - chance) / (1 - chance), abs=1e-4)
    # A reference at 9 beats the N-P variants at 2 and ties the P at 9; one at 2 ties the N-P and loses to the P.
    assert calibration.auc == pytest.approx(((n - r) * (n - p + p / 2) + r * (n - p) / 2) / n**2)


def test_bad_labels_and_calibrations_are_refused_with_file_line_and_field(tmp_path, seed_outputs):
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"id": "s3-list-buckets", "output": "x", "label": "maybe"}\n{"id": "nope", "output": "x", "label": "correct"}\n{"output": "x", "label": "correct"}\nnot json\n')
    result = CliRunner().invoke(app, ["calibrate", "--judge-model", HAIKU, "--dataset", str(SEED), "--labels", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:1: field 'label'" in result.output and f"{bad}:2: field 'id': no case 'nope'" in result.output
    assert f"{bad}:3: field 'id': missing required field" in result.output and f"{bad}:4: invalid JSON" in result.output

    one_sided = tmp_path / "correct-only.jsonl"
    one_sided.write_text('{"id": "s3-list-buckets", "output": "x", "label": "correct"}\n')
    result = CliRunner().invoke(app, ["calibrate", "--judge-model", HAIKU, "--dataset", str(SEED), "--labels", str(one_sided)])
    assert result.exit_code == 2 and "needs both correct and incorrect items" in result.output

    other = tmp_path / "other.json"
    calibration = Calibration(judge_model=SONNET, rubric=None, labels="shipped", items=2, scored=2, threshold=6,
                              at_best={"cases": 2, "threshold": 6, "confusion": {}, "accuracy": 1, "balanced_accuracy": 1, "kappa": 1, "auc": 1},
                              at_default={"cases": 2, "threshold": 8, "confusion": {}, "accuracy": 1, "balanced_accuracy": 1, "kappa": 1, "auc": 1},
                              auc=1, roc=[], calls_made=0, calls_cached=0, scores=[])
    other.write_text(calibration.model_dump_json())
    result = CliRunner().invoke(app, ["grade", "--dataset", str(SEED), "--outputs", str(seed_outputs), "--judge-model", HAIKU, "--calibration", str(other)])
    assert result.exit_code == 2 and f"calibration {other} is for judge '{SONNET}', not one of this run's judges ({HAIKU})" in result.output
    (tmp_path / "junk.json").write_text("{}")
    result = CliRunner().invoke(app, ["grade", "--dataset", str(SEED), "--outputs", str(seed_outputs), "--judge-model", HAIKU, "--calibration", str(tmp_path / "junk.json")])
    assert result.exit_code == 2 and "not written by `codegen-eval calibrate --write`" in result.output
    result = CliRunner().invoke(app, ["grade", "--dataset", str(SEED), "--outputs", str(seed_outputs), "--judge-model", HAIKU, "--judge-model", HAIKU])
    assert result.exit_code == 2 and f"--judge-model {HAIKU} given twice" in result.output


def test_old_single_judge_model_settings_still_load():
    old = RunConfig.model_validate({"dataset": str(SEED), "model": "local", "judge_model": HAIKU})  # an old run.json or deployment
    assert old.judge_models == [HAIKU] and old.judge_model == HAIKU
    assert RunConfig(model="local").judge_models == ["local"]
    assert RunConfig.model_validate({"model": "local", "judge_model": None}).judge_models == ["local"]
    assert RunConfig.model_validate(json.loads(old.model_dump_json())) == old


@pytest.mark.local_model
def test_calibrate_the_embedded_judge_on_a_small_labelled_subset(tmp_path, cache_dir, monkeypatch):
    """Six items (three short cases, reference and broken variant): about a minute on 2 cores. The
    figures are printed as measured; the small model is expected to separate them poorly."""
    monkeypatch.setenv("CODEGEN_EVAL_CACHE_DIR", str(cache_dir))
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    cases = {c.id: c for c in load_dataset(SEED)}
    chosen = ["s3-list-buckets", "iam-s3-get-put-my-data-bucket", "regex-s3-bucket-name"]
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(
        json.dumps({"id": i, "output": cases[i].expected, "label": "correct"}) + "\n" + json.dumps({"id": i, "output": BROKEN[i], "label": "incorrect"}) + "\n"
        for i in chosen
    ))
    saved = tmp_path / "local.json"
    result = CliRunner().invoke(app, ["calibrate", "--judge-model", "local", "--dataset", str(SEED), "--labels", str(labels), "--write", str(saved)])
    print(result.output)  # the measured figures, in the test log
    if result.exit_code == 2 and "needs both correct and incorrect items" in result.output:
        pytest.fail("the embedded judge gave no usable score to every item of one label:\n" + result.output)
    assert result.exit_code == 0, result.output
    calibration = Calibration.model_validate_json(saved.read_text())
    assert calibration.items == 6 and calibration.scored >= 2 and calibration.judge_model == "local"
    scores = [s.score for s in calibration.scores if s.score is not None]
    assert calibration.threshold in scores and all(1 <= s <= 10 for s in scores)
    assert f"best threshold (maximises balanced accuracy): {calibration.threshold:g}" in result.output
    assert "AUC" in result.output and "balanced accuracy" in result.output and "κ" in result.output
    if calibration.at_best.kappa is None or calibration.at_best.kappa < 0.2:  # said plainly, never hidden
        assert "carry little information" in result.output
