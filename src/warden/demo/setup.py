"""Everything the demo needs on disk and in its database before the server starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from warden.auth.tokens import create_token
from warden.demo.point import MODEL_FILE, POINT, write_point
from warden.demo.train import TrainedModel, train
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

    @property
    def config(self) -> Path:
        return self.point_file.parent

    @property
    def database(self) -> Path:
        return self.home / "warden.db"

    def close(self) -> None:
        self.engine.close()
        self.engine.db.dispose()


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
    return DemoSetup(home, engine, model, point_file, edited, caller, admin, reviewer)
