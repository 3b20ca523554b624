"""The report and comparison pages in real headless Chromium: no console errors, working filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from codegen_eval.reporting.compare import write_comparison
from tests.messages_api import REGEX_PROMPT, Reply, seed_responder

CHROMIUM = "/usr/bin/chromium"
# As root, on a machine whose network is closed: no sandbox, no background connections.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


def open_page(browser, path: Path):
    page = browser.new_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(path.resolve().as_uri())
    return page, problems


def partial_regex(body):
    if body["messages"][0]["content"].startswith(REGEX_PROMPT):
        return Reply(text="^[a-z.-]+$\n```")
    return seed_responder()(body)


def test_report_renders_charts_and_filters_rows(run, api, browser, tmp_path):
    before = run()
    api.responder = partial_regex
    after = run(cache_dir=str(tmp_path / "cache-2"))
    page, problems = open_page(browser, after / "report.html")
    assert page.locator(".charts svg").count() == 3
    assert page.locator("#leaderboard tr.model-row").count() == 1 and page.locator("#grid").count() == 0  # one model, one sample
    rows = page.locator("details.case")
    assert rows.count() == 4 and page.locator("details.case:visible").count() == 4
    page.select_option("select[data-filter=verdict]", "PARTIAL")
    assert page.locator("details.case:visible").count() == 1 and page.inner_text("#shown") == "1 shown"
    page.select_option("select[data-filter=verdict]", "")
    page.select_option("select[data-filter=format]", "python")
    assert page.locator("details.case:visible").count() == 2
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and problems == []

    comparison, problems = open_page(browser, write_comparison(before, after))
    assert comparison.locator("tr.regression").count() == 1 and problems == []
    comparison.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    print("screenshots:", tmp_path)


def test_multi_model_report_leaderboard_grid_and_filters(run, api, browser, tmp_path):
    from tests.test_multi_model import MODELS, SONNET, flaky_sonnet

    api.responder = flaky_sonnet()
    run_dir = run(models=MODELS, samples=5, temperature=0.7)
    page, problems = open_page(browser, run_dir / "report.html")
    board = page.locator("#leaderboard tr.model-row")
    assert board.count() == 2 and board.nth(0).get_attribute("data-model") == MODELS[0]  # best first
    sonnet = page.locator(f'#leaderboard tr[data-model="{SONNET}"]').inner_text()
    assert "90.0%" in sonnet and "0.900" in sonnet and "1.000" in sonnet and "0.750" in sonnet  # rate, pass@1, pass@5, pass^5
    assert page.locator("#temperature-note").is_visible() and page.locator("#pairwise tr").count() == 2
    assert page.locator("tr.grid-row").count() == 4 and page.locator("#grid td.share-3").inner_text() == "3/5"
    page.select_option("select[data-grid-filter=outcome]", "mixed")
    assert page.locator("tr.grid-row:visible").count() == 1 and page.inner_text("#grid-shown") == "1 shown"
    assert "regex-s3-bucket-name" in page.locator("tr.grid-row:visible").inner_text()
    page.select_option("select[data-filter=model]", SONNET)
    page.select_option("select[data-filter=verdict]", "PARTIAL")
    assert page.locator("details.case:visible").count() == 2  # sonnet's two broken regex samples
    shot = tmp_path / "multi.png"
    page.screenshot(path=str(shot), full_page=True)
    page.locator("#leaderboard").screenshot(path=str(tmp_path / "leaderboard.png"))
    page.locator("#grid").screenshot(path=str(tmp_path / "grid.png"))
    assert shot.stat().st_size > 10_000 and problems == []
    print("screenshots:", tmp_path)
