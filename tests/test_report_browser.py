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
    assert page.locator("svg").count() == 3
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
