"""`embedstore` — the typer app. Each command parses options, calls one library function, prints the result."""
from __future__ import annotations

import warnings

import typer

from . import analyze_cmds, encode_cmds, experiment_cmds, finetune_cmds, train_cmds
from .common import DEBUG_ENV, one_line_warning, set_debug

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Cross-lingual transfer with embedding LMs: encode once, align and train in seconds.")


@app.callback()
def _global_options(debug: bool = typer.Option(
        False, "--debug", help=f"Show the traceback of any error instead of one line (or set {DEBUG_ENV}=1).")) -> None:
    """Cross-lingual transfer with embedding LMs: encode once, align and train in seconds."""
    set_debug(debug)


app.command()(encode_cmds.encode)
app.add_typer(encode_cmds.models_app, name="models")
app.add_typer(encode_cmds.store_app, name="store")
app.command("train-aligner")(train_cmds.train_aligner)
app.command("train-head")(train_cmds.train_head)
app.command("evaluate")(train_cmds.evaluate)
app.command("predict")(train_cmds.predict)
app.command("sweep")(experiment_cmds.sweep)
app.command("report")(experiment_cmds.report)
app.command("demo")(experiment_cmds.demo)
app.add_typer(analyze_cmds.analyze_app, name="analyze")
app.command("tune")(finetune_cmds.tune)
app.command("finetune")(finetune_cmds.finetune)


def main() -> None:
    warnings.showwarning = one_line_warning
    app()
