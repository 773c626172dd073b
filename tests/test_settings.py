"""Settings from the environment: a bad value is refused with its name, a good one reaches the
part it tunes."""

from __future__ import annotations

from pathlib import Path

import pytest

from warden.api.app import create_app_from_env
from warden.settings import Settings


@pytest.mark.parametrize("raw", ["fast", "-1", "101", "nan"])
def test_a_bad_writer_linger_is_refused_with_its_name(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("WARDEN_WRITER_LINGER_MS", raw)
    with pytest.raises(ValueError, match="WARDEN_WRITER_LINGER_MS must be a number of milli"):
        Settings.from_env()


def test_the_writer_linger_reaches_the_writer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """What `warden serve` builds in each worker: the engine's writer gathers with it."""
    (tmp_path / "points").mkdir()
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WARDEN_CONFIG", str(tmp_path / "points"))
    monkeypatch.setenv("WARDEN_WRITER_LINGER_MS", "2.5")
    monkeypatch.delenv("WARDEN_DB_URL", raising=False)
    assert Settings.from_env().writer_linger_ms == 2.5
    app = create_app_from_env()
    try:
        assert app.state.engine.recorder.linger == pytest.approx(0.0025)
    finally:
        app.state.engine.close()
