"""The demo's decision point file, `loan_approval.yaml`, shipped as package data.

It is a plain file rather than generated YAML so a newcomer reads exactly what Warden loads.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

POINT = "loan_approval"
FILE_NAME = f"{POINT}.yaml"
MODEL_FILE = Path("models") / "credit.joblib"  # relative to the demo home, as the file says


def template() -> str:
    return resources.files("warden.demo").joinpath(FILE_NAME).read_text(encoding="utf-8")


def write_point(config_dir: Path, *, overwrite: bool = False) -> tuple[Path, bool]:
    """Write the point file into `config_dir` unless an (edited) copy is already there.

    Returns the path and whether it now differs from the shipped template.
    """
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / FILE_NAME
    text = template()
    if overwrite or not path.exists():
        path.write_text(text, encoding="utf-8")
    return path, path.read_text(encoding="utf-8") != text
