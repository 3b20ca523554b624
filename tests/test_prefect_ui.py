"""The Prefect UI, as a person sees it, in headless Chromium against a real server after two runs: the
flow-runs list, one flow run's graph and its artifacts, and an artifact's history of pass rates.
Screenshots are left in the test's directory (printed), to be looked at."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import CLAUDE, SECRET, SEED
from tests.test_report_browser import ARGS, CHROMIUM

ROOT = Path(__file__).resolve().parent.parent
TAGS = ["dataset:seed", f"model:{CLAUDE}", f"judge:{CLAUDE}"]
ARTIFACTS = [f"{kind}-seed-{CLAUDE}" for kind in ("verdicts", "summary", "progress")]


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


def test_prefect_ui_shows_named_tagged_runs_their_graph_and_artifacts(live_prefect, api, chromium, tmp_path):
    env = {**live_prefect.env, "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": SECRET, "CODEGEN_EVAL_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "codegen_eval.cli", "run", "--dataset", str(SEED), "--model", CLAUDE, "--out", str(tmp_path / "runs")],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=420)
        assert done.returncode == 0, done.stderr[-3000:]
    runs = httpx.post(f"{live_prefect.url}/flow_runs/filter", timeout=10,
                      json={"flow_runs": {"tags": {"all_": TAGS}}, "sort": "START_TIME_DESC", "limit": 2}).json()
    assert len(runs) == 2 and all(r["name"].startswith(f"seed · {CLAUDE} · ") for r in runs)
    latest = runs[0]
    ui = live_prefect.url.removesuffix("/api")
    page = chromium.new_page(viewport={"width": 1600, "height": 1000})

    page.goto(f"{ui}/runs")
    for run in runs:
        page.get_by_text(run["name"], exact=True).first.wait_for(timeout=60_000)
    for tag in TAGS:
        assert page.get_by_text(tag, exact=True).count() >= 2
    page.screenshot(path=str(tmp_path / "1-flow-runs.png"), full_page=True)

    page.goto(f"{ui}/runs/flow-run/{latest['id']}")
    page.get_by_text(latest["name"], exact=True).first.wait_for(timeout=60_000)
    page.locator("canvas").first.wait_for(timeout=60_000)  # the run graph is drawn on a canvas
    page.wait_for_timeout(3_000)
    page.screenshot(path=str(tmp_path / "2-flow-run-graph.png"), full_page=True)

    page.locator("li.p-tab", has_text="Artifacts").click()
    for key in ARTIFACTS:
        page.get_by_text(key).first.wait_for(timeout=60_000)
    page.screenshot(path=str(tmp_path / "3-flow-run-artifacts.png"), full_page=True)

    page.goto(f"{ui}/artifacts/key/summary-seed-{CLAUDE}")  # the key's versions: the latest's pass rate, one row per run
    rate = page.get_by_text("pass rate 100% (95% CI 51%–100%) on 4 cases")
    rate.first.wait_for(timeout=60_000)
    page.wait_for_timeout(2_000)
    for run in runs:  # one version per run, each linked to its flow run
        assert page.get_by_text(run["name"], exact=True).count() >= 1
    page.screenshot(path=str(tmp_path / "4-artifact-history.png"), full_page=True)
    print(f"Prefect UI screenshots: {tmp_path}")
    if os.environ.get("CODEGEN_EVAL_SCREENSHOTS"):  # keep them past pytest's temporary directories
        out = Path(os.environ["CODEGEN_EVAL_SCREENSHOTS"])
        out.mkdir(parents=True, exist_ok=True)
        for shot in tmp_path.glob("*.png"):
            (out / shot.name).write_bytes(shot.read_bytes())
