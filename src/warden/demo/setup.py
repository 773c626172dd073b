"""Everything the demo needs on disk and in its database before the server starts."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from warden.auth.tokens import create_token
from warden.demo.point import MODEL_FILE, POINT, write_point
from warden.demo.train import BROKEN_FILE, TrainedModel, train, train_broken
from warden.engine import Engine
from warden.policy.loader import load_points
from warden.store.database import create_engine, migrate, sqlite_url

ACTOR = "warden demo"


@dataclass
class DemoSetup:
    home: Path
    engine: Engine
    model: TrainedModel
    point_file: Path
    point_edited: bool
    caller_token: str
    admin_token: str
    reviewer_token: str = ""
    inherited: list[Inherited] = field(default_factory=list)

    @property
    def config(self) -> Path:
        return self.point_file.parent

    @property
    def database(self) -> Path:
        return self.home / "warden.db"

    def close(self) -> None:
        self.engine.close()
        self.engine.db.dispose()


@dataclass(frozen=True)
class Inherited:
    """A protection an earlier run left engaged: it still sends every decision to review."""

    what: str  # "alert" or "kill switch"
    why: str
    alert_id: str | None = None
    scope: str | None = None  # of a kill switch: the point, or "*"


def reset(home: Path) -> None:
    """Forget earlier runs: database, ledger key, models. The point file, perhaps edited, stays."""
    if not home.is_dir():
        return
    for child in home.iterdir():
        if child.name == "points":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def inherited_protections(engine: Engine) -> list[Inherited]:
    """What earlier runs left engaged: firing `tighten` alerts and kill switches."""
    from warden.monitor import store

    with engine.db.connect() as conn:
        held = store.protections(conn)
    found = [
        Inherited("alert", f"alert {row.rule} ({row.reason})", row.alert_id)
        for row in held
        if row.point == POINT
    ]
    found += [
        Inherited(
            "kill switch", f"kill switch on {k.scope} ({k.reason}, by {k.actor})", None, k.scope
        )
        for k in engine.kill_switches()
        if k.engaged and k.scope in (POINT, "*")
    ]
    return found


CHALLENGER = "credit-lr-2"
# One application, shown in the printed examples and used to smoke-test the challenger.
EXAMPLE = {
    "amount": 12000,
    "income": 58000,
    "credit_score": 742,
    "debt_to_income": 0.18,
    "employment_years": 6,
    "country": "DE",
}


def offer_challenger(engine: Engine, home: Path) -> None:
    """Register a second model version (trained on another sample) to roll out by hand."""
    if not (home / BROKEN_FILE).is_file():  # for the README's bad-model rollback
        train_broken(home / BROKEN_FILE)
    if any(v.version == CHALLENGER for v in engine.registry.versions(POINT)):
        return
    trained = train(home / "models" / "credit-challenger.joblib", seed=7)
    engine.registry.register(
        engine.points[POINT],
        version=CHALLENGER,
        artifact=trained.path,
        actor=ACTOR,
        metadata={
            "training_data": "synthetic applications, seed 7",
            "holdout_accuracy": round(trained.accuracy, 4),
        },
        smoke_input=EXAMPLE,
    )


def prepare(home: Path) -> DemoSetup:
    """Train the model, write the point file, migrate the DB and create two tokens.

    Training is deterministic, so rerunning the demo rebuilds the same model; an edited point
    file is kept, so a newcomer can change a rule and run the demo again.
    """
    model = train(home / MODEL_FILE)
    point_file, edited = write_point(home / "points")
    db = create_engine(sqlite_url(home))
    try:
        migrate(db)
        engine = Engine(
            load_points(point_file.parent), db, actor=ACTOR, model_cache=home / "model-cache"
        )
    except BaseException:
        db.dispose()
        raise
    try:
        offer_challenger(engine, home)
    except BaseException:
        engine.close()
        db.dispose()
        raise
    try:
        caller, _ = create_token(
            engine.recorder, name="demo-caller", roles=["caller"], points=[POINT], actor=ACTOR
        )
        admin, _ = create_token(
            engine.recorder, name="demo-admin", roles=["admin"], points=["*"], actor=ACTOR
        )
        reviewer, _ = create_token(
            engine.recorder,
            name="demo-reviewer",
            roles=["reviewer"],
            points=[POINT],
            groups=list(engine.points[POINT].spec.review.reviewers),
            actor=ACTOR,
        )
    except BaseException:
        engine.close()
        db.dispose()
        raise
    setup = DemoSetup(home, engine, model, point_file, edited, caller, admin, reviewer)
    try:
        setup.inherited = inherited_protections(engine)
    except BaseException:
        setup.close()
        raise
    return setup
