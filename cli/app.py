"""`embedstore` — the typer app. Each command parses options, calls one library function, prints the result.

Commands are imported when they are asked for, not all at start: the estimator commands list the aligner and
head registries in their help, and building those imports torch and scikit-learn (seconds), which `encode`,
`store` and `report` do not need. A re-run of a finished `embedstore encode` must cost what hashing its inputs
costs, not the start-up of every library the package can use.
"""
from __future__ import annotations

import importlib
import warnings

import click
import typer
from typer.core import TyperGroup

from .common import DEBUG_ENV, interrupted, one_line_warning, set_debug

#: command name → (module of embedstore.cli, attribute): a function becomes a command, a Typer a group of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "encode": ("encode_cmds", "encode"),
    "models": ("encode_cmds", "models_app"),
    "store": ("encode_cmds", "store_app"),
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
}


class LazyCommands(TyperGroup):
    """The top-level group: lists every command, builds one only when it is run or its help is shown."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def invoke(self, ctx: click.Context) -> object:
        """Ctrl-C before a command's own error handling runs (while its modules are imported) keeps the contract."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise interrupted() from None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attribute = COMMANDS[name]
        target = getattr(importlib.import_module(f"{__package__}.{module}"), attribute)
        if isinstance(target, typer.Typer):  # a group even with one subcommand: `models pull`, not `models`
            command = typer.main.get_group(target)
            command.name = name
            return command
        holder = typer.Typer()
        holder.command(name)(target)
        return typer.main.get_command(holder)


app = typer.Typer(cls=LazyCommands, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def embedstore(debug: bool = typer.Option(
        False, "--debug", help=f"Show the traceback of any error instead of one line (or set {DEBUG_ENV}=1).")) -> None:
    """Cross-lingual transfer with embedding LMs: encode once, align and train in seconds."""
    from embedstore.base.settings import mark_explicit

    set_debug(debug)
    mark_explicit(())  # no flag of an earlier command in this process counts for this one


def main() -> None:
    warnings.showwarning = one_line_warning
    app()
