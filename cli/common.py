"""Shared CLI plumbing: one console, every error turned into one line and a non-zero exit (a traceback only
when asked for), and the encoding options every command that reads vectors takes, declared once.

The rule of the CLI's modules (checked by tests/test_api.py): they import the library only through
`embedstore.api` (each command calls its function there, `embedstore.api.COMMANDS`), besides each other,
the standard library, typer, click and rich."""
from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # `embedstore --help` must not pay for the API's imports (the store, the encoding options)
    from embedstore.api import EncodeOptions

console = Console()
err_console = Console(stderr=True)


DEBUG_ENV = "EMBEDSTORE_DEBUG"
"""Set to 1 (or run `embedstore --debug ...`) to get the traceback of any error instead of its one line."""
_debug = False


def set_debug(on: bool) -> None:
    """The global `--debug` option (set by the app's callback before every command)."""
    global _debug
    _debug = on


def debugging() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip() not in ("", "0")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def user_errors(fn: Callable) -> Callable:
    """Every error ends the command with one `error:` line on stderr and exit 1 (Ctrl-C: 130, work kept): the
    exit-code contract of docs/contracts.md. A command that finds a problem it must report with exit 1 (damage,
    failed cells) raises an `EmbedstoreError` saying so, never a bare `typer.Exit(1)`.

    Library errors (`EmbedstoreError`) are for users: their message is printed as is. Anything else is a bug or
    an environment failure (a full disk, a damaged file a reader did not anticipate): its type and message are
    printed on one line too, because a traceback hides the one fact a user needs; `--debug` (or
    `EMBEDSTORE_DEBUG=1`) lets every error through with its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KeyboardInterrupt:
            raise interrupted() from None
        except (typer.Exit, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise  # typer's own ways out (usage errors, explicit exits) keep their codes (typer.Exit is no click Exit)
        except Exception as e:  # noqa: BLE001 - the one place every error becomes one line
            if debugging():
                raise
            from embedstore.api import EmbedstoreError

            if isinstance(e, EmbedstoreError):
                message = _one_line(str(e))
            else:
                message = f"{type(e).__name__}: {_one_line(str(e)) or '(no message)'} " \
                          "(an unexpected error; run with --debug for the traceback)"
            err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def interrupted() -> typer.Exit:
    """Ctrl-C: one line, and the exit (130) to raise."""
    err_console.print("interrupted: finished work is kept; run the same command again to continue")
    return typer.Exit(130)


def one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                     file: Any = None, line: str | None = None) -> None:
    """warnings.showwarning for the CLI: users get the message, not the library's file and source line."""
    err_console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:,.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024


_ENCODING_PANEL = "Encoding options (the store key: vectors made under other options are never mixed in)"


#: How the command line spells some encoding options beyond their fields: a short flag, `layers` as one `--layer`.
_SHORT = {"model": "-m", "layers": "-l"}


def _encoding_parameters(layers: Literal["one", "many", "none"]) -> list[inspect.Parameter]:
    """The typer declarations of the encoding options, from `EncodeOptions`' fields (name, type, help, default as
    shown; the fingerprint is pinned by a saved pipeline, never a flag); `layers`: how many `--layer` values the
    command takes ("none": the command declares its own layer selection). Their defaults are None: an option not
    given comes from the project settings (EMBEDSTORE_* variables, embedstore.toml), then from the defaults."""
    from embedstore.api import EncodeOptions, options_of

    params = []
    for o in options_of(EncodeOptions, exclude=("fingerprint",)):
        name, annotation, help = o.name, Optional[o.type], o.help
        if name == "layers":
            if layers == "none":
                continue
            name, annotation = "layer", Optional[list[int]] if layers == "many" else Optional[int]
            help += "; repeat for several" if layers == "many" else ""
        declared = typer.Option(None, f"--{name.replace('_', '-')}", *([_SHORT[o.name]] if o.name in _SHORT else []),
                                help=f"{help} (default: {o.shown}; EMBEDSTORE_{name.upper()} or embedstore.toml may "
                                "set it).", rich_help_panel=_ENCODING_PANEL, show_default=False)
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=declared))
    return params


def inject_options(parameters: list[inspect.Parameter], build: Callable[[dict[str, Any]], Any],
                   argument: str) -> Callable[[Callable], Callable]:
    """Give a command the declared `parameters` as options and call it with `build(their values)` as its
    `argument`: a group of options that makes one library value is declared once, for every command taking it."""
    names = [p.name for p in parameters]

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name != argument]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return fn(*args, **{argument: build(values)}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != argument},
                                  **{p.name: p.annotation for p in parameters}}
        return wrapper

    return decorate


def resolve_encoding(values: dict[str, Any]) -> EncodeOptions:
    """Flags given win; the rest come from the project settings, then the defaults (`options_with_settings`,
    which the Python API uses too). The flags given are noted, so the run's record says "flag" for them."""
    from embedstore.api import mark_explicit, options_with_settings

    given = {name: value for name, value in values.items() if value is not None and value != []}
    mark_explicit(given)
    note_settings()
    return options_with_settings(given)


def note_settings() -> None:
    """One stderr line naming the settings an environment variable or embedstore.toml set, so a value nobody
    typed on this command line is never a surprise (stdout stays clean for --json)."""
    from embedstore.api import project_settings

    settings = project_settings()
    chosen = [f"{name}={settings.get(name)!r} ({source})" for name, source in settings.record().items()
              if source not in ("flag", "default")]
    if chosen:
        err_console.print("settings: " + "; ".join(chosen), highlight=False, soft_wrap=True, markup=False)


def encoding_options(layers: Literal["one", "many", "none"] = "one") -> Callable[[Callable], Callable]:
    """Give a command the encoding options (a flag per `EncodeOptions` field: `--model`, `--pooling`, `--layer`,
    `--max-length`, `--prefix`, `--dtype`, `--quantize`, `--precision`) and call it with them built into one
    `EncodeOptions` as its `encoding` argument.

    Why a decorator: when each command declared its own subset, the options it lacked fell back to defaults
    and its vectors were looked up under another key than `encode` wrote (issue 12)."""
    return inject_options(_encoding_parameters(layers), resolve_encoding, "encoding")


DEVICE_HELP = "auto (CUDA when present), cpu, cuda, cuda:N."
BATCH_SIZE_HELP = "At most this many texts per forward pass."


def compute_options(batch_size: bool = True) -> Callable[[Callable], Callable]:
    """`--device` and `--batch-size` for a command whose steps encode texts: every encode the command runs computes
    with them (`encoding.options.computing`). `batch_size=False` for a command whose `--batch-size` means its own
    minibatches (`analyze gradients`); its encodes then batch by the default."""
    from embedstore.api import ComputeOptions

    parameters = [inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                                    default=typer.Option(ComputeOptions.device, "--device", help=DEVICE_HELP))]
    if batch_size:
        parameters.append(inspect.Parameter("batch_size", inspect.Parameter.KEYWORD_ONLY, annotation=int,
                                            default=typer.Option(ComputeOptions.batch_size, "--batch-size",
                                                                 help=BATCH_SIZE_HELP)))

    def build(values: dict[str, Any]) -> Any:
        return ComputeOptions(**values)

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def within(*args: Any, compute: Any, **kwargs: Any) -> Any:
            from embedstore.api import computing

            with computing(compute):
                return fn(*args, **kwargs)

        signature = inspect.signature(fn)
        within.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(),
                        inspect.Parameter("compute", inspect.Parameter.KEYWORD_ONLY)])
        return inject_options(parameters, build, "compute")(within)

    return decorate


STORE = typer.Option(None, "--store", "-s", help="Vector store: a .zarr directory, .h5 file or object-store URL "
                     "(s3://bucket/prefix/store.zarr, with the package's s3 extra installed); default: EMBEDSTORE_STORE "
                     "or embedstore.toml's, else cache/store.zarr.")
PIPELINE_MODEL = typer.Option(None, "--model", "-m", help="The model directory, when the pipeline recorded its model "
                              "as a path (paths in a pipeline are not followed; its fingerprint must match; "
                              "EMBEDSTORE_MODEL or embedstore.toml may name it).")
WHERE = typer.Option([], "--where", help="Row filter COLUMN=V1,V2 (repeatable), e.g. fold=0,1,2,3,4,5; rows "
                     "pass when every filter holds.")


def model_flag() -> Any:
    """`--model` of the commands that take a model but no other encoding option (they resolve it with
    `model_option`)."""
    from embedstore.api import EncodeOptions

    return typer.Option(None, "--model", "-m", help=f"Hub name or local model directory (default: "
                        f"{EncodeOptions.model}; EMBEDSTORE_MODEL or embedstore.toml may set it).")


def model_option(model: Optional[str]) -> str:
    """The model of a command taking `MODEL_OPTION`: the flag, else the project settings, else the default,
    through the same path as every encoding option (noted on stderr when a setting chose it)."""
    return resolve_encoding({"model": model}).model
