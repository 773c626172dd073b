"""A reviewer in a real browser (Debian's Chromium, driven by Playwright) decides a pending
decision while the caller long-polls for it. Screenshots are kept as test artefacts."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.reviewing import FOUR_EYES_INPUT, REVIEW_INPUT, review_points, token
from warden.api.app import create_app
from warden.auth.users import create_user
from warden.decision import Decision
from warden.demo.server import BackgroundServer, bind
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.sdk.http import WardenClient

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium"),
]


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("WARDEN_TEST_ARTIFACTS", tmp_path / "artefacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    from warden.store.database import create_engine, migrate

    db: sa.Engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(db)
    engine = Engine(load_points(review_points(tmp_path / "points")), db, actor="test")
    background = BackgroundServer(create_app(engine), bind("127.0.0.1", 0))
    url = f"http://127.0.0.1:{background.port}"
    background.start(f"{url}/readyz")
    yield url, engine
    background.stop()
    engine.close()
    db.dispose()


def test_reviewer_overrides_in_the_browser_and_the_caller_hears_of_it(
    server: tuple[str, Engine], artefacts: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, engine = server
    create_user(
        engine.recorder,
        username="olga",
        password=PASSWORD,
        roles=["reviewer"],
        points=["loan_approval"],
        groups=["credit-officers"],
        actor="test",
    )
    caller_headers, _ = token(engine, ["caller"], name="caller")
    secret = caller_headers["Authorization"].removeprefix("Bearer ")
    with WardenClient(url, secret) as caller:
        pending = caller.decide("loan_approval", REVIEW_INPUT)
        caller.decide("loan_approval", FOUR_EYES_INPUT)
        assert pending.status.value == "pending"
        heard: list[Decision] = []
        waiter = threading.Thread(target=lambda: heard.append(caller.wait(pending.id, 60)))
        waiter.start()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{url}/console/queue")
            expect(page).to_have_url(f"{url}/console/login?next=%2Fconsole%2Fqueue")
            page.get_by_label("Username").fill("olga")
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in", exact=True).click()
            expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
            expect(page.get_by_text(pending.id[-12:])).to_be_visible()
            page.screenshot(path=str(artefacts / "console-queue.png"), full_page=True)

            page.keyboard.press("j")
            page.keyboard.press("Enter")
            expect(page.get_by_role("heading", name="Proposal")).to_be_visible()
            page.keyboard.press("c")  # claim with the keyboard shortcut
            expect(page.get_by_text("You hold this task")).to_be_visible()
            page.mouse.wheel(0, 400)  # wherever the reader is on a long page, `?` opens in view
            page.keyboard.press("?")
            expect(page.locator("#shortcuts")).to_be_in_viewport()
            page.keyboard.press("?")
            expect(page.locator("#shortcuts")).to_be_hidden()
            page.get_by_label("Outcome").select_option("decline")
            page.get_by_label("Reason (required)").first.fill("debt ratio above our limit")
            page.screenshot(path=str(artefacts / "console-task.png"), full_page=True)
            page.get_by_role("button", name="Override").click()
            # on to the next free task, claimed, with word of the verdict just given
            expect(
                page.get_by_text(re.compile("Done: the previous task was overridden"))
            ).to_be_visible()
            browser.close()

        waiter.join(30)
    assert heard and heard[0].status.value == "final" and heard[0].outcome == "decline"
    assert heard[0].reasons[-1].message == "debt ratio above our limit"
