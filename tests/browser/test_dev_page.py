"""The browser path in real headless Chromium: a read token, a fetch-based SSE
reader, a forced disconnect that resumes without duplicates, and the end."""

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from app.db import events as event_queries
from tests.fixtures.factories import run_typeid, seed_run
from tests.fixtures.server import LiveServer, start_live_server
from tests.fixtures.sse import auth

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
WAIT_MS = 15_000

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed (apt-get install chromium); CI installs it",
)


@pytest.fixture(scope="module")
def dev_server(migrated_database_url: str) -> Iterator[LiveServer]:
    with start_live_server(migrated_database_url, dev_pages=True) as server:
        yield server


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM is not None, "CI must install Chromium"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
            ],
        )
        yield browser
        await browser.close()


async def count_rows(page: Page, count: int) -> None:
    await page.wait_for_function(
        f"document.querySelectorAll('#timeline li').length >= {count}",
        timeout=WAIT_MS,
    )


async def test_dev_page_follows_resumes_and_stops_in_chromium(
    dev_server: LiveServer, db: asyncpg.Connection, browser: Browser
) -> None:
    key, run_id = await seed_run(db)
    run = run_typeid(run_id)
    await event_queries.publish_event(db, run_id, "run_enqueued", status="queued")
    await event_queries.publish_event(db, run_id, "run_started", status="running")
    token = await mint_token(dev_server, key, run)
    page = await browser.new_page()

    await page.goto(f"{dev_server.base_url}/dev/runs/{run}#token={token}")
    await count_rows(page, 2)
    await publish_phase(db, run_id, "generating")
    await count_rows(page, 3)
    await page.evaluate("window.selftuneDev.dropConnection()")
    await publish_phase(db, run_id, "evaluating")
    await event_queries.publish_event(
        db,
        run_id,
        "candidate_persisted",
        candidate_id="cand_1",
        payload={"score": 0.91},
    )
    await count_rows(page, 5)
    await event_queries.publish_event(db, run_id, "run_completed", status="succeeded")
    await page.wait_for_function(
        "window.selftuneDev.state.stopped === true", timeout=WAIT_MS
    )
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dev-run-page.png"), full_page=True)
    state = await page.evaluate(
        "({types: window.selftuneDev.state.received.map(e => e.type),"
        " duplicates: window.selftuneDev.state.duplicates,"
        " reconnects: window.selftuneDev.state.reconnects,"
        " status: document.getElementById('status').textContent})"
    )

    assert state["types"] == [
        "run_enqueued",
        "run_started",
        "phase_changed",
        "phase_changed",
        "candidate_persisted",
        "run_completed",
    ]
    assert state["duplicates"] == 0
    assert state["reconnects"] >= 1
    assert state["status"] == "succeeded"
    assert (ARTIFACTS / "dev-run-page.png").stat().st_size > 0


async def test_dev_page_without_a_token_says_what_to_do(
    dev_server: LiveServer, browser: Browser
) -> None:
    page = await browser.new_page()

    await page.goto(f"{dev_server.base_url}/dev/runs/{run_typeid(uuid.uuid4())}")
    error = page.locator("#error")
    await error.wait_for(state="visible", timeout=WAIT_MS)
    text = await error.text_content()

    assert text is not None
    assert "#token=" in text


async def mint_token(server: LiveServer, key: str, run: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.base_url}/api/v1/improve-runs/{run}/read-tokens",
            headers=auth(key),
        )
    token: str = response.json()["token"]
    return token


async def publish_phase(
    conn: asyncpg.Connection, run_id: uuid.UUID, phase: str
) -> None:
    await event_queries.publish_event(conn, run_id, "phase_changed", phase=phase)
