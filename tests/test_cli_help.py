"""`embedstore --help` lists every command without importing any of them (nor torch, transformers, sklearn or
the store), and what it lists is what each command's own help says; `--version` prints the package's."""
from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "transformers", "sklearn", "zarr", "embedstore.encoding.options")

PROBE = """
import sys
from typer.testing import CliRunner
from embedstore.cli.app import app
imported_by_app = [m for m in {heavy!r} if m in sys.modules]
result = CliRunner().invoke(app, ["--help"])
assert result.exit_code == 0, result.output
print(imported_by_app, [m for m in {heavy!r} if m in sys.modules])
"""


def test_the_top_level_help_imports_no_heavy_library():
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[] []"


def test_the_installed_entry_point_help_imports_no_heavy_library():
    """What the user runs (`embedstore --help`, the console script's `main`, here as `python -m embedstore`): every
    module the process imports, as `-X importtime` lists it, is free of the heavy libraries: the help is lazy."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "embedstore", "--help"], capture_output=True,
                          text=True, check=True)
    assert "train-aligner" in done.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "embedstore.cli.app" in imported  # the probe saw the app's imports
    heavy = {m for m in imported if m.split(".")[0] in {"torch", "transformers", "sklearn", "scipy", "numpy", "zarr"}}
    assert not heavy, sorted(heavy)[:10]


def test_the_listing_is_each_commands_own_help():
    from typer.testing import CliRunner

    from embedstore.cli.app import COMMANDS, app, summary

    listing = " ".join(CliRunner().invoke(app, ["--help"]).output.replace("│", " ").split())
    for name in COMMANDS:
        own = CliRunner().invoke(app, [name, "--help"])
        assert own.exit_code == 0, own.output
        first = summary(name).split("\n\n")[0]
        assert first and " ".join(first.split()) in " ".join(own.output.replace("│", " ").split()), name
        assert " ".join(first.split()) in listing, name


def test_version():
    from typer.testing import CliRunner

    import embedstore
    from embedstore.cli.app import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"embedstore {embedstore.__version__}"


def test_docs_cli_md_is_what_the_commands_declare_and_a_short_flag_means_one_thing():
    """docs/cli.md is generated from the commands; a short flag (-f, -o, ...) stands for one long option."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs" / "make_cli.py"
    spec = importlib.util.spec_from_file_location("make_cli", script)
    make_cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_cli)
    assert make_cli.PAGE.read_text(encoding="utf-8") == make_cli.page(), "run python docs/make_cli.py"
    longs_of_short: dict[str, set[str]] = {}
    for spelling in make_cli.options():
        names = spelling.split(", ")
        for short in (n for n in names if not n.startswith("--")):
            longs_of_short.setdefault(short, set()).update(n for n in names if n.startswith("--"))
    clashes = {short: longs for short, longs in longs_of_short.items()
               if not any(all(n in group for group in [set(s.split(", ")) for s in make_cli.options() if short in
                                                        s.split(", ")]) for n in longs)}
    assert not clashes, clashes


def test_no_help_text_loses_a_bracket_to_rich_markup():
    """typer renders help as rich markup, so an unescaped `'embedstore[ray]'` reads `'embedstore'` in `--help`:
    every command's and option's help shows every character it was written with (a literal bracket is `\\[`)."""
    import typer
    from rich.text import Text

    from embedstore.cli.app import app

    group = typer.main.get_command(app)
    ctx = group.make_context("embedstore", [], resilient_parsing=True)
    lost = []

    def walk(command, path: str) -> None:
        texts = [command.help or ""] + [p.help or "" for p in command.params if getattr(p, "help", None)]
        lost.extend((path, t) for t in texts if Text.from_markup(t).plain != t.replace("\\[", "["))
        for name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
            walk(command.get_command(ctx, name), f"{path} {name}")

    walk(group, "embedstore")
    assert not lost, lost[:3]
