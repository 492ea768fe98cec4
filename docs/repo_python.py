"""Run a docs script with the project's interpreter when it was started with another one.

The docs scripts import embedstore, which the README installs into the clone's `.venv`. Started as
`python docs/make_results.py` from a shell where that venv is not active, they re-start themselves with
`.venv/bin/python` (same arguments) instead of failing on the import; with no such venv, one line says what to do.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def use_project_python() -> None:
    if importlib.util.find_spec("embedstore") is not None:
        return
    venv_python = REPO / ".venv" / "bin" / "python"
    # a venv's python is a symlink to the base interpreter: the guard variable, not the path, stops a second re-start
    if venv_python.exists() and not os.environ.get("EMBEDSTORE_DOCS_RESTARTED"):
        os.environ["EMBEDSTORE_DOCS_RESTARTED"] = "1"
        os.execv(str(venv_python), [str(venv_python), *sys.argv])
    sys.exit(f"error: embedstore is not importable by {sys.executable}: install the project first "
             f"(README, first command) or activate {REPO / '.venv'}")
