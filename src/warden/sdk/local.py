"""The in-process SDK: `Warden.from_config("points").decide("loan_approval", {...})`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from warden.decision import Decision
from warden.engine import Engine, Proposal
from warden.policy.loader import load_available
from warden.review.waiting import wait_final
from warden.settings import Settings
from warden.store.database import create_engine, migrate
from warden.store.queries import KillSwitch

F = TypeVar("F", bound=Callable[..., Any])


class Warden:
    """Governed decisions in your own process, recorded in the same database as the server."""

    def __init__(self, engine: Engine, *, home: Path | None = None) -> None:
        self.engine = engine
        self.home = home or Settings.from_env().home

    @classmethod
    def from_config(
        cls,
        config: str | Path | None = None,
        *,
        db_url: str | None = None,
        home: str | Path | None = None,
        actor: str = "sdk",
    ) -> Warden:
        settings = Settings.from_env(
            home=Path(home) if home else None,
            config=Path(config) if config else None,
            db_url=db_url,
        )
        db = create_engine(settings.db_url)
        migrate(db)
        loaded = load_available(settings.config)  # a broken file does not stop the others
        return cls(
            Engine(
                loaded.points,
                db,
                actor=actor,
                model_cache=settings.model_cache,
                broken=loaded.broken,
            ),
            home=settings.home,
        )

    def decide(
        self,
        point: str,
        input: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        output: Any = None,
        confidence: Any = None,
        model_version: str | None = None,
        actor: str = "sdk",
        callback_url: str | None = None,
    ) -> Decision:
        """Run one governed decision. In proposal mode pass the AI's `output` and `confidence`."""
        return self.engine.decide(
            point,
            dict(input),
            context=context,
            idempotency_key=idempotency_key,
            actor=actor,
            proposal=_proposal(output, confidence, model_version),
            callback_url=callback_url,
        )

    async def decide_async(
        self,
        point: str,
        input: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        output: Any = None,
        confidence: Any = None,
        model_version: str | None = None,
        actor: str = "sdk",
        callback_url: str | None = None,
    ) -> Decision:
        """`decide` for asyncio applications: awaits the model and the commit without holding
        a thread, and concurrent calls share vectorised model calls."""
        return await self.engine.decide_async(
            point,
            dict(input),
            context=context,
            idempotency_key=idempotency_key,
            actor=actor,
            proposal=_proposal(output, confidence, model_version),
            callback_url=callback_url,
        )

    def decide_many(
        self,
        point: str,
        inputs: Sequence[Mapping[str, Any]],
        *,
        contexts: Sequence[Mapping[str, Any]] | None = None,
        actor: str = "sdk",
    ) -> list[Decision]:
        """A batch: one model call where the model allows, one group commit; same governance."""
        return self.engine.decide_many(
            point, [dict(x) for x in inputs], contexts=contexts, actor=actor
        )

    def get(self, decision_id: str) -> Decision:
        return self.engine.get(decision_id)

    def wait(self, decision_id: str, timeout: float = 30.0) -> Decision:
        """The decision once a reviewer (or its SLA expiry) made it final.

        Raises TimeoutError if it is still pending after `timeout` seconds.
        """
        decision = wait_final(lambda: self.engine.get(decision_id), timeout)
        if not decision.is_final:
            raise TimeoutError(f"decision {decision_id} is still pending after {timeout:g} s")
        return decision

    def record_outcome(self, decision_id: str, outcome: str, *, actor: str = "sdk") -> Decision:
        return self.engine.record_ground_truth(decision_id, outcome, actor=actor)

    def kill(self, point: str = "*", *, reason: str, actor: str = "sdk") -> KillSwitch:
        return self.engine.set_kill(point, True, actor=actor, reason=reason)

    def resume(self, point: str = "*", *, reason: str, actor: str = "sdk") -> KillSwitch:
        return self.engine.set_kill(point, False, actor=actor, reason=reason)

    def tool(
        self,
        point: str,
        *,
        agent: str = "agent",
        name: str | None = None,
        annotations: dict[str, bool] | None = None,
        hold: float = 0.0,
        secrets: list[str] | None = None,
    ) -> Callable[[F], F]:
        """Govern a function an agent calls as a tool (sync or async) under `point`.

        `hold` seconds to wait for a reviewer before raising ToolPending (0: at once)."""
        from warden.mcp.config import Wait
        from warden.mcp.run import digest_key
        from warden.mcp.tool import govern

        wait = Wait(mode="hold", timeout=hold) if hold > 0 else Wait(mode="pending")
        return govern(
            self,
            point,
            key=digest_key(self.home),
            agent=agent,
            name=name,
            annotations=annotations,
            wait=wait,
            secrets=secrets,
        )

    def close(self) -> None:
        self.engine.close()
        self.engine.db.dispose()

    def __enter__(self) -> Warden:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _proposal(output: Any, confidence: Any, model_version: str | None) -> Proposal | None:
    if output is None and confidence is None:
        return None
    return Proposal(output, confidence, model_version)
