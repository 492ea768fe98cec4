"""Issue 28 item 6: one exit-code contract for every command (docs/contracts.md): 0 with nothing added; 1 with
exactly one `error:` line on stderr; 130 on Ctrl-C with one `interrupted:` line; an explicit `typer.Exit(code)`
keeps its code and adds no `error:` line (it used to fall through to the generic handler: "error: Exit: 1 (an
unexpected error...)").

The fault is raised at the first line of each command's own function (a trace hook raises it as the function is
entered), so every command is held to the contract through its real wrappers, whatever options it declares."""
from __future__ import annotations

import inspect
import sys

import numpy as np
import pytest
import typer
import typer._click as typer_click
from typer.testing import CliRunner

from embedstore.base.errors import EmbedstoreError
from embedstore.cli.app import app
from embedstore.cli.common import DEBUG_ENV

runner = CliRunner()
VALUES = {"format": "onnx", "method": "mlm"}  # options whose values typer checks before the command runs


def leaves(command, path=()):
    context = typer_click.Context(command)
    if hasattr(command, "list_commands"):
        for name in command.list_commands(context):
            yield from leaves(command.get_command(context, name), (*path, name))
    else:
        yield path, command


COMMANDS = {" ".join(path): command for path, command in leaves(typer.main.get_command(app))}


def arguments(command) -> list[str]:
    """The command's required arguments and options, each given a value that parses."""
    out: list[str] = []
    for param in command.params:
        if param.required:
            value = VALUES.get(param.name, "x")
            out += [value] if type(param).__name__ == "TyperArgument" else [param.opts[0], value]
    return out


def invoke_raising(name: str, error: BaseException, monkeypatch):
    command = COMMANDS[name]
    body = inspect.unwrap(command.callback).__code__

    def trace(frame, event, arg):
        if event == "call" and frame.f_code is body:
            raise error
        return None

    monkeypatch.delenv(DEBUG_ENV, raising=False)
    sys.settrace(trace)
    try:
        return runner.invoke(app, [*name.split(), *arguments(command)])
    finally:
        sys.settrace(None)


def test_every_command_is_covered():
    assert len(COMMANDS) >= 20 and {"store verify", "sweep", "mine", "analyze cosine"} <= set(COMMANDS)


def _returns(*args, **kwargs):
    print("done")


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_a_command_that_returns_is_exit_0_with_nothing_on_stderr(name, monkeypatch):
    """The success case of the contract, per command: its own function's body replaced by one that prints a line
    and returns, the command's real wrappers (lazy import, `user_errors`) must give exit 0 and add nothing."""
    body = inspect.unwrap(COMMANDS[name].callback)
    monkeypatch.setattr(body, "__signature__", inspect.signature(body, eval_str=True), raising=False)  # typer's view
    monkeypatch.setattr(body, "__code__", _returns.__code__)
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    r = runner.invoke(app, [*name.split(), *arguments(COMMANDS[name])])
    assert (r.exit_code, r.stdout, r.stderr) == (0, "done\n", ""), r.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.fault('errors and Ctrl-C: the exit-code contract')
def test_an_error_is_exit_1_with_one_error_line(name, monkeypatch):
    r = invoke_raising(name, EmbedstoreError("the file x: expected y"), monkeypatch)
    assert (r.exit_code, r.stderr) == (1, "error: the file x: expected y\n"), r.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.fault('errors and Ctrl-C: the exit-code contract')
def test_ctrl_c_is_exit_130_with_one_line(name, monkeypatch):
    r = invoke_raising(name, KeyboardInterrupt(), monkeypatch)
    assert r.exit_code == 130, r.output
    assert r.stderr.startswith("interrupted:") and r.stderr.count("\n") == 1


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.fault('errors and Ctrl-C: the exit-code contract')
def test_an_explicit_exit_keeps_its_code_and_adds_no_error_line(name, monkeypatch):
    r = invoke_raising(name, typer.Exit(3), monkeypatch)
    assert r.exit_code == 3 and "error:" not in r.output, r.output


@pytest.mark.fault('errors and Ctrl-C: the exit-code contract')
def test_verify_of_a_damaged_store_is_exit_1_with_one_error_line(tmp_path):
    from embedstore.data.hashing import text_ids
    from embedstore.store import Store, StoreKey
    key = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
    st = Store.open(tmp_path / "s.zarr")
    with st.writer() as w:
        w.key(key, 3, {}, chunk_rows=4).append(text_ids([f"t{i}" for i in range(8)]), np.ones((8, 3), np.float32))
    (st.path / key.group_name / "vectors" / "c" / "0" / "0").unlink()
    r = runner.invoke(app, ["store", "verify", str(st.path)])
    assert r.exit_code == 1 and "damaged: key" in r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"error: {st.path}: 8 committed rows damaged")
    assert "Exit" not in r.output


@pytest.mark.fault('errors and Ctrl-C: the exit-code contract')
def test_ctrl_c_while_a_command_module_is_imported_is_exit_130(monkeypatch):
    """The lazy import of a command (torch, scikit-learn: seconds) runs before the command's own wrapper."""
    import importlib

    def interrupted(name, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib, "import_module", interrupted)
    r = runner.invoke(app, ["report", "x"])
    assert r.exit_code == 130 and r.stderr.startswith("interrupted:") and r.stderr.count("\n") == 1
