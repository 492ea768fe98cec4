"""Every CLI command calls the Python API (issue 30.7): one function per command (`embedstore.api.COMMANDS`), the
README's API section names each, and the CLI reaches the library only through the API.

The rule enforced on the CLI's modules (embedstore/cli/*.py, every import statement anywhere in them, function
bodies and TYPE_CHECKING blocks included): an import of the package is `embedstore.api` or a module under it,
or a module of the CLI itself (`embedstore.cli.*`, relative imports); anything else of `embedstore` is a library
internal and fails the test. The standard library and third-party packages (typer, click, rich) are not limited.
"""
from __future__ import annotations

import ast
import inspect
import re
import textwrap
from pathlib import Path

import pytest
import typer

import embedstore.api as api
from embedstore.cli.app import app

REPO = Path(__file__).resolve().parents[1]
CLI_DIR = REPO / "cli"  # installed as embedstore.cli (pyproject package-dir); a clone has no embedstore/cli


def _commands() -> dict[str, object]:
    """Every command of the CLI by its path ("encode", "store verify"), its function unwrapped from the
    decorators (`user_errors`, the injected options)."""
    found: dict[str, object] = {}

    def walk(command, ctx, path):
        if hasattr(command, "list_commands"):  # a group
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                walk(sub, typer.Context(sub, parent=ctx), [*path, name])
        else:
            found[" ".join(path)] = inspect.unwrap(command.callback)

    group = typer.main.get_group(app)
    walk(group, typer.Context(group), [])
    return found


def _api_calls(function) -> set[str]:
    """Names of `embedstore.api` functions the command's body imports and calls (`from embedstore.api import
    tune as run` ... `run(...)` counts as calling `tune`)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    imported = {alias.asname or alias.name: alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "embedstore.api" for alias in node.names}
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    return {imported[name] for name in called if name in imported}


def test_every_cli_command_has_one_api_function_and_calls_it():
    commands = _commands()
    assert len(commands) >= 24  # encode ... adapt: a walk that found nothing would pass the checks below
    assert sorted(commands) == sorted(api.COMMANDS), "a CLI command without its API function, or the reverse"
    for path, function in commands.items():
        wanted = api.COMMANDS[path]
        assert getattr(api, wanted.__name__) is wanted, f"{path}: {wanted.__name__} is not exported by embedstore.api"
        assert wanted.__name__ in _api_calls(function), f"`{path}` does not call embedstore.api.{wanted.__name__}"


def _embedstore_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
    return [(line, name) for line, name in out if name == "embedstore" or name.startswith("embedstore.")]


def _allowed(module: str) -> bool:
    return module in ("embedstore.api", "embedstore.cli") or module.startswith(("embedstore.api.", "embedstore.cli."))


def test_the_cli_imports_the_library_only_through_the_api():
    files = sorted(CLI_DIR.glob("*.py"))
    assert len(files) >= 10
    internals = [f"{f.name}:{line}: {name}" for f in files for line, name in _embedstore_imports(f)
                 if not _allowed(name)]
    assert internals == []
    assert any(_embedstore_imports(f) for f in files)  # the scan sees imports at all


def test_the_rule_catches_a_library_import(tmp_path):
    module = tmp_path / "x.py"
    module.write_text("def f():\n    from embedstore.encoding.models import pull\n    from embedstore.api import tune\n")
    assert [name for _, name in _embedstore_imports(module) if not _allowed(name)] == ["embedstore.encoding.models"]


def test_the_readme_api_section_names_every_command_s_function():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## From Python"):]
    section = section[:section.index("\n## ", 1)]
    missing = [f"{path}: {fn.__name__}" for path, fn in api.COMMANDS.items()
               if not re.search(rf"\b{re.escape(fn.__name__)}\b", section)]
    assert missing == []


def test_every_api_function_is_reachable_from_the_package_root():
    import embedstore

    for fn in api.COMMANDS.values():
        assert getattr(embedstore, fn.__name__) is fn


def test_keyword_options_are_checked_against_their_dataclasses(tmp_path):
    with pytest.raises(api.ConfigError, match=r"training option epoch: unknown key \(did you mean 'epochs'\?\)"):
        api.tune(tmp_path / "t.tsv", out=tmp_path / "o", epoch=2)
    with pytest.raises(api.ConfigError, match=r"adapt lora option lora_rank: unknown key \(did you mean 'lora_r'\?\)"):
        api.adapt("lora", tmp_path / "t.tsv", out=tmp_path / "o", lora_rank=4)


def test_rows_are_one_value_with_filters(tmp_path):
    source = api.rows(tmp_path / "t.tsv", "en", label="apps", where={"fold": [0, 1]})
    assert isinstance(source, api.Source) and source.where == (("fold", ("0", "1")),)


def test_encoder_gradients_takes_the_training_options_it_reads_from_train_options(tmp_path):
    """Issue 30.5: `analyze encoder-gradients`' training flags and API keywords are `TrainOptions` fields
    (`GRADIENT_OPTIONS`), not a list of their own; one it does not read is refused before anything loads."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from test_cli_vocabulary import commands

    flags = commands()["analyze encoder-gradients"]
    derived = {o.flag: o for o in api.options_of(api.TrainOptions) if o.name in api.GRADIENT_OPTIONS}
    assert len(derived) == len(api.GRADIENT_OPTIONS) and set(derived) <= set(flags)
    assert all(flags[flag].help == option.help for flag, option in derived.items())
    assert flags["--head"].default == api.GRADIENT_DEFAULTS["head"]
    with pytest.raises(api.ConfigError, match=r"training option lr: unknown key; allowed: batch_size, max_length"):
        api.analyze_encoder_gradients(tmp_path / "t.tsv", tmp_path / "p.tsv", lr=1e-3)
