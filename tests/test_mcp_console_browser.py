"""A held tool call decided in a real browser (Debian's Chromium, driven by Playwright): the
review queue shows the tool, its arguments and why it was held; a person approves; the agent
collects, and the tool ran exactly once. Screenshots are kept as test artefacts."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.test_console_browser import ARGS, CHROMIUM, PASSWORD, artefacts  # noqa: F401
from warden.api.app import create_app
from warden.auth.users import create_user
from warden.demo.server import BackgroundServer, bind
from warden.engine import Engine
from warden.mcp.tool import ToolPending, ToolRefused
from warden.policy.loader import load_points
from warden.sdk.local import Warden

FIXTURES = Path(__file__).parent / "mcp_fixtures"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no Chromium at /usr/bin/chromium"),
]


@pytest.fixture
def console(tmp_path: Path) -> Iterator[tuple[str, Warden]]:
    from warden.store.database import create_engine, migrate

    db: sa.Engine = create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    migrate(db)
    shutil.copytree(FIXTURES / "points", tmp_path / "points")
    engine = Engine(load_points(tmp_path / "points"), db, actor="test")
    background = BackgroundServer(create_app(engine), bind("127.0.0.1", 0))
    url = f"http://127.0.0.1:{background.port}"
    background.start(f"{url}/readyz")
    yield url, Warden(engine, home=tmp_path / "home")
    background.stop()
    engine.close()
    db.dispose()


def test_a_held_tool_call_is_approved_in_the_console_and_runs_once(
    console: tuple[str, Warden],
    artefacts: Path,  # noqa: F811
) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, warden = console
    create_user(
        warden.engine.recorder,
        username="olga",
        password=PASSWORD,
        roles=["reviewer"],
        points=["agent_tools"],
        actor="test",
    )
    ran: list[tuple[str, float]] = []

    @warden.tool("agent_tools", annotations={"destructiveHint": True})
    def refund(account: str, amount: float) -> str:
        """Refund an amount to a customer."""
        ran.append((account, amount))
        return f"refunded {amount:.2f} to {account}"

    with pytest.raises(ToolPending) as held:
        refund("ACC-7731", 120.5)
    decision_id = held.value.decision_id
    assert ran == []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{url}/console/queue")
        page.get_by_label("Username").fill("olga")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()
        expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
        expect(page.get_by_text(decision_id[-12:])).to_be_visible()
        page.screenshot(path=str(artefacts / "mcp-queue.png"), full_page=True)

        page.goto(f"{url}/console/tasks/{decision_id}")
        body = page.locator("main")
        expect(body).to_contain_text("refund")  # the tool
        expect(body).to_contain_text("ACC-7731")  # its arguments
        expect(body).to_contain_text("120.5")
        expect(body).to_contain_text("destructive tools need a person")  # why it was held
        page.keyboard.press("c")
        expect(page.get_by_text("You hold this task")).to_be_visible()
        page.screenshot(path=str(artefacts / "mcp-task.png"), full_page=True)
        page.get_by_role("button", name="Approve", exact=True).click()
        expect(
            page.get_by_text(re.compile(r"Done: the (previous )?task was approved"))
        ).to_be_visible()
        browser.close()

    assert ran == []  # approving does not run it: the agent collects the exact call
    assert (
        refund("ACC-7731", 120.5, warden_decision_id=decision_id) == "refunded 120.50 to ACC-7731"
    )
    assert (
        refund("ACC-7731", 120.5, warden_decision_id=decision_id) == "refunded 120.50 to ACC-7731"
    )
    assert ran == [("ACC-7731", 120.5)]


def test_the_tools_page_shows_each_tools_calls_offline(
    console: tuple[str, Warden],
    artefacts: Path,  # noqa: F811
) -> None:
    """An auditor opens Tools: a row per tool with its routes, denials and latency, in a page
    that loads nothing from outside the server; choosing another window reloads it."""
    from playwright.sync_api import expect, sync_playwright

    url, warden = console
    create_user(
        warden.engine.recorder,
        username="aude",
        password=PASSWORD,
        roles=["auditor"],
        points=["agent_tools"],
        actor="test",
    )

    @warden.tool("agent_tools", annotations={"readOnlyHint": True})
    def read_balance(account: str) -> str:
        return "100"

    @warden.tool("agent_tools")
    def delete_record(record: str) -> None:
        raise AssertionError("never runs")

    for account in ("a", "b"):
        read_balance(account)
    with pytest.raises(ToolRefused):
        delete_record("r")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 700})
        outside: list[str] = []
        page.on(
            "request",
            lambda r: outside.append(r.url) if not r.url.startswith(url) else None,
        )
        page.goto(f"{url}/console/tools")
        page.get_by_label("Username").fill("aude")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in", exact=True).click()
        page.get_by_role("link", name="Tools", exact=True).click()
        expect(page.get_by_role("heading", name="Agents' tool calls")).to_be_visible()
        reads = page.locator('tr[data-tool="read_balance"]')
        expect(reads.locator("td.auto")).to_have_text("2")
        expect(reads.locator("td.tool-ms")).to_contain_text(" ms")
        deletes = page.locator('tr[data-tool="delete_record"]')
        expect(deletes.locator("td.refused")).to_have_text("1")
        expect(deletes.locator("td.denials")).to_have_text("refused 1")
        page.screenshot(path=str(artefacts / "mcp-tools.png"), full_page=True)
        page.get_by_label("Window").select_option("15m")
        page.get_by_role("button", name="Show", exact=True).click()
        expect(page).to_have_url(re.compile(r"/console/tools\?window=15m$"))
        expect(reads.locator("td.auto")).to_have_text("2")
        browser.close()
    assert outside == []
