"""`embedstore` — the typer app. Each command parses options, calls one library function, prints the result.

Commands are imported when they are asked for, not all at start: the estimator commands list the aligner and
head registries in their help, and building those imports torch and scikit-learn (seconds), which `encode`,
`store` and `report` do not need. A re-run of a finished `embedstore encode` must cost what hashing its inputs
costs, not the start-up of every library the package can use.
"""
from __future__ import annotations

import ast
import atexit
import importlib
import os
import sys
import threading
import warnings
from importlib.resources import files
from typing import NoReturn

import click
import typer
from typer.core import TyperGroup

from .common import DEBUG_ENV, interrupted, one_line_warning, set_debug

#: command name → (module of embedstore.cli, attribute): a function becomes a command, a Typer a group of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("encode_cmds", "encode"),
    "models": ("encode_cmds", "models_app"),
    "store": ("encode_cmds", "store_app"),
    "cache": ("encode_cmds", "cache_app"),
    "train-aligner": ("train_cmds", "train_aligner"),
    "train-head": ("train_cmds", "train_head"),
    "evaluate": ("train_cmds", "evaluate"),
    "predict": ("train_cmds", "predict"),
    "export": ("export_cmds", "export"),
    "sweep": ("experiment_cmds", "sweep"),
    "report": ("experiment_cmds", "report"),
    "demo": ("experiment_cmds", "demo"),
    "analyze": ("analyze_cmds", "analyze_app"),
    "mine": ("mine_cmds", "mine"),
    "tune": ("finetune_cmds", "tune"),
    "finetune": ("finetune_cmds", "finetune"),
    "adapt": ("adapt_cmds", "adapt"),
    "lora-ta": ("adapt_cmds", "lora_ta"),
}


def summary(name: str) -> str:
    """A command's help as `embedstore --help` lists it, read from its module's source without importing it
    (the command function's docstring, or a group's `help=`): the listing must not cost the commands' imports."""
    module, attribute = COMMANDS[name]
    tree = ast.parse(files(__package__).joinpath(f"{module}.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == attribute:
            return ast.get_docstring(node) or ""
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == attribute for t in node.targets) \
                and isinstance(node.value, ast.Call):
            for keyword in node.value.keywords:
                if keyword.arg == "help" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return ""


class LazyCommands(TyperGroup):
    """The top-level group: lists every command, builds one only when it is run or its help is shown."""

    _listing = False  # True while the group's own help is being written

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def invoke(self, ctx: click.Context) -> object:
        """Ctrl-C before a command's own error handling runs (while its modules are imported) keeps the contract."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise interrupted() from None

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        if self._listing:  # the listing needs a name and a line, not the command's imports
            return click.Command(name, help=summary(name).split("\n\n")[0])
        module, attribute = COMMANDS[name]
        target = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
        if isinstance(target, typer.Typer):  # a group even with one subcommand: `models pull`, not `models`
            command = typer.main.get_group(target)
            command.name = name
            return command
        holder = typer.Typer(add_completion=False)
        holder.command(name)(target)
        return typer.main.get_command(holder)


app = typer.Typer(cls=LazyCommands, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _print_version(asked: bool) -> None:
    if asked:
        from embedstore.api import version

        typer.echo(f"embedstore {version()}")
        raise typer.Exit()


@app.callback()
def embedstore(debug: bool = typer.Option(
        False, "--debug", help=f"Show the traceback of any error instead of one line (or set {DEBUG_ENV}=1)."),
        version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                     help="Print the version and exit.")) -> None:
    """Cross-lingual transfer with embedding LMs: encode once, align and train in seconds."""
    from embedstore.api import mark_explicit

    set_debug(debug)
    mark_explicit(())  # no flag of an earlier command in this process counts for this one


def main() -> NoReturn:
    warnings.showwarning = one_line_warning
    try:
        app()  # standalone mode: always ends in SystemExit
    except SystemExit as done:
        leave(done.code)
    leave(0)


def leave(code: int | str | None) -> NoReturn:
    """End the process once a command is done, without tearing the interpreter down.

    Why: freeing the modules and objects of torch, transformers and scikit-learn one by one is not work the user
    asked for, and it took 1.0-1.7 s after the last line (the demo's re-run printed "4.4 s" and ended at 5.6 s;
    strace showed no system call in that second, only Python's finalization). The exit handlers still run
    (multiprocessing's, logging's, tempfile's and weakref finalizers), then the output streams are flushed and the
    process ends with SystemExit's status (None 0, a message printed and 1), as mypy ends its runs. Before them,
    as at any exit, threads that are not daemons are waited for (`threading._shutdown`, what the interpreter
    calls first: it also stops idle thread pools), so no write of a background thread is cut short.
    """
    status = 0 if code is None else code if isinstance(code, int) else 1
    if not isinstance(code, (int, type(None))):
        print(code, file=sys.stderr)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`): Python's own exit says 120 for this
            status = status or 120
    os._exit(status)
