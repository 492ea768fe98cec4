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


def test_the_readmes_fresh_start_installs_neither_ray_nor_an_s3_client():
    """Issue 31: Ray and S3 are optional extras; the README's first command installs what it names and nothing of
    theirs (its extras resolved through pyproject, nested extras included)."""
    import re

    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    first = next(line for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines() if "pip install" in line)
    wanted, requirements = re.findall(r"pip install -e '\.\[([\w,]+)\]'", first)[0].split(","), []
    while wanted:
        extra = wanted.pop()
        for requirement in config["optional-dependencies"][extra]:
            nested = re.fullmatch(r"embedstore\[([\w,]+)\]", requirement)
            wanted += nested.group(1).split(",") if nested else []
            requirements += [] if nested else [requirement]
    names = {re.split(r"[<>=\[ ;]", r, maxsplit=1)[0].lower() for r in config["dependencies"] + requirements}
    assert names and not names & {"ray", "s3fs", "fsspec", "boto3", "moto"}, names
    assert {"ray"} <= {re.split(r"[<>=]", r)[0] for r in config["optional-dependencies"]["ray"]}
    assert {"s3fs"} <= {re.split(r"[<>=]", r)[0] for r in config["optional-dependencies"]["s3"]}
