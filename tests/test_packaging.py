"""Every package folder ships: a subpackage missing from pyproject's list works in an editable install and is
absent from a wheel, so a user's `pip install embedstore` would fail on import."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _listed_packages() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return set(config["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_listed_in_pyproject():
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "embedstore").rglob("__init__.py")}
    on_disk.add("embedstore.cli")  # cli/ installs as embedstore.cli (package-dir)
    assert on_disk == _listed_packages()
