"""`embedstore analyze cosine|retrieval|layers|gradients|encoder-gradients`: how well an aligner aligns, on
held-out pairs; and whether alignment and task objectives agree (on cached vectors, or through the encoder)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer
from rich.markup import escape
from rich.table import Table

from embedstore.api import ALIGNERS, DEFAULT_ALIGNER, DEFAULT_HEAD, GRADIENT_DEFAULTS, GRADIENT_OPTIONS, HEADS, \
    NO_ALIGNER, ConfigError, EncodeOptions, SplitOptions, options_of

from .common import STORE, WHERE, compute_options, console, encoding_options, inject_options, model_flag, \
    model_option, print_json, user_errors
from .finetune_cmds import training_parameters

#: "procrustes (default), fc, ae, ...": the registry's names, the default first.
_ARCH_NAMES = ", ".join([f"{DEFAULT_ALIGNER} (default)", *(name for name in ALIGNERS if name != DEFAULT_ALIGNER)])

analyze_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Alignment analyses on held-out translation pairs: cosine "
                          "(with shuffled baseline), retrieval (NN and CSLS), per layer, gradient conflict.")

# Options shared by every command (typer reads these defaults as option declarations).
_PAIRS = typer.Argument(..., help="Translation pairs: TSV (no quoting), CSV or JSONL with one column per language.")
_SOURCE = typer.Option("en", "--source-column", help="Column of the language the aligner maps from.")
_TARGET = typer.Option("ko", "--target-column", help="Column of the language the aligner maps onto.")
_ARCH = typer.Option(None, "--arch", help=f"Aligner to fit on the fit rows: {_ARCH_NAMES}.")
_ALIGNER_DIR = typer.Option(None, "--aligner", help="A saved aligner directory to load instead of fitting one; "
                            "the held-out rows must be rows it was not fitted on (choose them with --test-folds).")
_SEED = typer.Option(0, "--seed", help="Seeds the split, subsamples, shuffled baseline and trained models.")
_OUT = typer.Option(None, "--out", "-o", help="Write the result as JSON (.jsonl appends one line).")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
_KS = typer.Option([1, 5], "--k", help="P@k cut-offs; repeat for several.")
_CSLS_K = typer.Option(10, "--csls-k", help="Neighbours in CSLS's hubness term.")


def _split_parameters() -> list[inspect.Parameter]:
    """The typer declarations of the held-out split's options: `SplitOptions`' fields (names, defaults, help)."""
    return [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY,
                              annotation=Optional[o.type] if o.default is None else o.type,
                              default=typer.Option(o.default, o.flag, help=o.help))
            for o in options_of(SplitOptions)]


split_options = inject_options(_split_parameters(), lambda values: values, "split")


def _held_out_analysis(name: str, *, layers: Literal["one", "none"] = "one",
                       batch_size: bool = True) -> Callable[[Callable], Callable]:
    """An `analyze` command on held-out pairs: the split's, the encoding's and the compute options injected, errors
    as one line. `layers="none"`: the command selects its layers itself; `batch_size=False`: its `--batch-size` is
    its own."""
    def decorate(fn: Callable) -> Callable:
        command = compute_options(batch_size=batch_size)(fn)
        command = split_options(encoding_options(layers=layers)(command))
        return analyze_app.command(name)(user_errors(command))

    return decorate


def _say(text: str) -> None:
    """A plain line: no rich markup (paths and fingerprints may hold [brackets]) and no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _header(result: dict[str, Any]) -> None:
    prov = result["provenance"]
    fitted = f"loaded from {prov['aligner_dir']}" if prov.get("aligner_dir") else f"{prov['fit_rows']:,} fit rows"
    _say(f"{prov['input']['path']}: {result['source_language']}→{result['language']}, aligner "
         f"{result['aligner']}, {fitted}, {prov['test_rows']:,} held-out rows "
         f"({prov['split']}); model {prov['model']} (fingerprint {prov['model_fingerprint'][:8]})")


def _collapse_line(collapse: Optional[dict[str, Any]], space: str = "") -> None:
    if collapse is None:
        return
    if collapse["collapsed"]:
        console.print(f"[bold red]COLLAPSED{escape(space)}:[/bold red] {escape(collapse['reason'])}", highlight=False,
                      soft_wrap=True)
    else:
        _say(f"not collapsed{space}: output variance {collapse['variance_ratio']:.2f}× the target's, "
             f"NN P@1 {collapse['p1']:.3f} (raw {collapse['identity_p1']:.3f})")


def _checks(result: dict[str, Any], tgt: str) -> None:
    """The collapse check against raw target vectors and, for an aligner the head also puts target text through,
    in the head's space (against aligned target vectors); and whether the held-out rows were checked against a
    loaded aligner's fit pairs."""
    _collapse_line(result["collapse"], f" (against raw {tgt})" if "collapse_head_space" in result else "")
    _collapse_line(result.get("collapse_head_space"), f" in the head's space (against aligned {tgt})")
    held_out = result.get("held_out")
    if held_out and not held_out["checked"]:
        console.print(f"[bold yellow]warning:[/bold yellow] {escape(held_out['warning'])}", highlight=False,
                      soft_wrap=True)


def _retrieval_table(retrieval: dict[str, dict[str, Any]], src: str, tgt: str) -> Table:
    raw = retrieval["raw"]
    ks = list(raw["forward"]["nn"])
    table = Table(title=f"retrieval on {raw['rows']:,} held-out pairs (CSLS k={raw['csls_k']})")
    for col in ("vectors", "direction", "method", *ks):
        table.add_column(col, justify="right" if col.startswith("p@") else "left")
    spaces = [("raw", src, tgt), ("aligned", f"aligned {src}", tgt)]
    if "head_space" in retrieval:  # the aligner also maps target text at test time: the head's own space
        spaces.append(("head_space", f"aligned {src}", f"aligned {tgt}"))
    for space, label, keys in spaces:
        for direction, arrow in (("forward", f"{label}→{keys}"), ("backward", f"{keys}→{label}")):
            for method in ("nn", "csls"):
                scores = retrieval[space][direction][method]
                table.add_row(space, arrow, method.upper(), *(f"{scores[k]:.3f}" for k in ks))
    return table


def _finish(result: dict[str, Any], as_json: bool, out: Optional[Path]) -> bool:
    """Print JSON when asked; returns whether the human-readable form is still to be printed."""
    if as_json:
        print_json(result)
        return False
    if out is not None:
        _say(f"wrote {out}")
    return True


@_held_out_analysis("cosine")
def cosine(
    pairs_file: Path = _PAIRS, source_column: str = _SOURCE, target_column: str = _TARGET,
    arch: Optional[str] = _ARCH, aligner: Optional[Path] = _ALIGNER_DIR, where: list[str] = WHERE,
    store: Optional[str] = STORE, seed: int = _SEED,
    out: Optional[Path] = _OUT, as_json: bool = _JSON, *, encoding: EncodeOptions, split: dict,
) -> None:
    """Mean cosine EN↔TR, aligned↔TR, aligned↔EN and shuffled baselines (paper Table 9), with retrieval P@1."""
    from embedstore.api import analyze_cosine

    result = analyze_cosine(pairs_file, source_column=source_column, target_column=target_column, arch=arch,
                            aligner=aligner, where=where, store=store,
                            encoding=encoding, seed=seed, out=out, progress=not as_json, **split)
    if not _finish(result, as_json, out):
        return
    _header(result)
    src, tgt = source_column, target_column
    table = Table(title=f"mean cosine on {result['rows']:,} held-out pairs")
    table.add_column("pairs")
    table.add_column("cosine", justify="right")
    for name, label in (("en_tr", f"{src} ↔ {tgt}"), ("shuffled_en_tr", f"{src} ↔ shuffled {tgt}"),
                        ("aligned_tr", f"aligned {src} ↔ {tgt}"), ("shuffled", f"aligned {src} ↔ shuffled {tgt}"),
                        ("aligned_en", f"aligned {src} ↔ {src}")):
        table.add_row(label, f"{result[name]:.3f}")
    console.print(table)
    raw, aligned = result["retrieval"]["raw"]["forward"], result["retrieval"]["aligned"]["forward"]
    _say(f"retrieval {src}→{tgt} P@1 (NN / CSLS): raw {raw['nn']['p@1']:.3f} / {raw['csls']['p@1']:.3f}, "
         f"aligned {aligned['nn']['p@1']:.3f} / {aligned['csls']['p@1']:.3f}")
    _checks(result, tgt)


@_held_out_analysis("retrieval")
def retrieval(
    pairs_file: Path = _PAIRS, source_column: str = _SOURCE, target_column: str = _TARGET,
    arch: Optional[str] = _ARCH, aligner: Optional[Path] = _ALIGNER_DIR, where: list[str] = WHERE,
    store: Optional[str] = STORE, seed: int = _SEED,
    k: list[int] = _KS, csls_k: int = _CSLS_K, out: Optional[Path] = _OUT, as_json: bool = _JSON,
    *, encoding: EncodeOptions, split: dict,
) -> None:
    """P@k both ways, nearest neighbour and CSLS, raw and aligned, on held-out pairs."""
    from embedstore.api import analyze_retrieval

    result = analyze_retrieval(pairs_file, source_column=source_column, target_column=target_column, arch=arch,
                               aligner=aligner, where=where, store=store, encoding=encoding, seed=seed, ks=k,
                               csls_k=csls_k, out=out, progress=not as_json, **split)
    if not _finish(result, as_json, out):
        return
    _header(result)
    console.print(_retrieval_table(result["retrieval"], source_column, target_column))
    cos = result["cosine"]
    _say(f"mean cosine: {source_column}↔{target_column} {cos['en_tr']:.3f}, aligned↔{target_column} "
         f"{cos['aligned_tr']:.3f}, aligned↔shuffled {cos['shuffled']:.3f}")
    _checks(result, target_column)


def _parse_layers(values: list[str]) -> tuple[int, ...]:
    layers: list[int] = []
    for value in values:
        for token in value.split(","):
            try:
                layers.append(int(token))
            except ValueError:
                raise ConfigError(f"--layers {value!r}: {token!r} is not a layer number; expected e.g. 0,6,12 "
                                  "(negative counts from the end)") from None
    return tuple(layers)


@_held_out_analysis("layers", layers="none")
def layers(
    pairs_file: Path = _PAIRS, source_column: str = _SOURCE, target_column: str = _TARGET,
    arch: Optional[str] = _ARCH, where: list[str] = WHERE, store: Optional[str] = STORE,
    layer_list: list[str] = typer.Option([], "--layers", "--layer", "-l",
                                         help="Layers, e.g. 0,6,12 or repeated; default: every layer."),
    seed: int = _SEED, k: list[int] = _KS,
    csls_k: int = _CSLS_K, out: Optional[Path] = _OUT, as_json: bool = _JSON,
    *, encoding: EncodeOptions, split: dict,
) -> None:
    """Cosine and retrieval per hidden layer, with a fresh aligner fitted on each layer's vectors."""
    from embedstore.api import analyze_layers

    result = analyze_layers(pairs_file, source_column=source_column, target_column=target_column, arch=arch,
                            layers=_parse_layers(layer_list), where=where, store=store,
                            encoding=encoding, seed=seed, ks=k, csls_k=csls_k, out=out, progress=not as_json,
                            **split)
    if not _finish(result, as_json, out):
        return
    _header(result)
    src, tgt = source_column, target_column
    table = Table(title=f"per layer, {result['layers'][0]['cosine']['rows']:,} held-out pairs")
    for col in ("layer", f"cos {src}↔{tgt}", "cos aligned↔", "cos shuffled", "raw P@1 NN", "aligned P@1 NN",
                "aligned P@1 CSLS", "collapsed"):
        table.add_column(col, justify="right")
    for row in result["layers"]:
        cos, ret = row["cosine"], row["retrieval"]
        table.add_row(str(row["layer"]), f"{cos['en_tr']:.3f}", f"{cos['aligned_tr']:.3f}", f"{cos['shuffled']:.3f}",
                      f"{ret['raw']['forward']['nn']['p@1']:.3f}", f"{ret['aligned']['forward']['nn']['p@1']:.3f}",
                      f"{ret['aligned']['forward']['csls']['p@1']:.3f}",
                      "[red]yes[/red]" if row["collapse"]["collapsed"] else "no")
    console.print(table)


@_held_out_analysis("gradients", batch_size=False)
def gradients(
    pairs_file: Path = _PAIRS, source_column: str = _SOURCE, target_column: str = _TARGET,
    label_column: str = typer.Option(..., "--label-column", help="Column of task labels for the English rows."),
    arch: Optional[str] = typer.Option(None, "--arch", help=f"Aligner to fit: {_ARCH_NAMES}, or {NO_ALIGNER} "
                                       "(raw vectors through an identity linear map)."),
    aligner: Optional[Path] = _ALIGNER_DIR,
    head: str = typer.Option(DEFAULT_HEAD, "--head", help=f"Task head trained on aligned English: {' or '.join(HEADS)}."),
    batch_size: int = typer.Option(64, "--batch-size", help="Rows per minibatch of the gradient comparison."),
    where: list[str] = WHERE, store: Optional[str] = STORE, seed: int = _SEED,
    out: Optional[Path] = _OUT, as_json: bool = _JSON, *, encoding: EncodeOptions, split: dict,
) -> None:
    """Cosine between alignment-loss and task-loss gradients on the shared representation (held-out rows).

    Near 0: the objectives are orthogonal (better alignment does little for the task); negative: they conflict.
    """
    from embedstore.api import analyze_gradients

    result = analyze_gradients(pairs_file, label_column=label_column, source_column=source_column,
                               target_column=target_column, arch=arch, aligner=aligner, head=head,
                               batch_size=batch_size, where=where, store=store, encoding=encoding, seed=seed,
                               out=out, progress=not as_json, **split)
    if not _finish(result, as_json, out):
        return
    _header(result)
    _say(f"shared representation: {result['map']}")
    table = Table(title=f"cos(∇ alignment loss, ∇ task loss), {result['rows']:,} held-out rows")
    table.add_column("")
    table.add_column("w.r.t. parameters θ\n(per minibatch)", justify="right")
    table.add_column("w.r.t. representation z\n(per row)", justify="right")
    p, z = result["parameters"], result["representation"]
    for label, key, fmt in (("n", "n", "{:,}"), ("mean cosine", "mean", "{:+.3f}"), ("std", "std", "{:.3f}"),
                            ("min", "min", "{:+.3f}"), ("max", "max", "{:+.3f}"),
                            ("negative share", "negative_fraction", "{:.0%}"),
                            ("mean |∇ alignment|", "alignment_grad_norm", "{:.3g}"),
                            ("mean |∇ task|", "task_grad_norm", "{:.3g}")):
        table.add_row(label, fmt.format(p[key]), fmt.format(z[key]))
    console.print(table)
    acc = result["head_accuracy"]
    dropped = f"; {result['dropped_unseen_label']:,} rows dropped (label unseen by the head)" \
        if result["dropped_unseen_label"] else ""
    _say(f"losses: alignment {result['alignment_loss']:.4g}, task {result['task_loss']:.4g}; held-out head "
         f"accuracy: aligned {source_column} {acc['english_aligned']:.3f}, {target_column} "
         f"{acc['target']:.3f}{dropped}")
    _collapse_line(result["collapse"])


@analyze_app.command("encoder-gradients")
@user_errors
@inject_options(training_parameters(only=GRADIENT_OPTIONS, defaults=GRADIENT_DEFAULTS), lambda values: values,
                "training")
def encoder_gradients(
    train: Path = typer.Option(..., "--train", help="English task rows: TSV (no quoting), CSV or JSONL."),
    pairs_file: Path = typer.Option(..., "--pairs", help="Translation pairs for the alignment loss."),
    text_column: str = typer.Option("text", help="Text column of --train."),
    label_column: str = typer.Option("label", help="Label column of --train."),
    source_column: str = _SOURCE, target_column: str = _TARGET,
    model: Optional[str] = model_flag(),
    batches: int = typer.Option(8, "--batches", help="Minibatches to measure on."),
    where: list[str] = WHERE,
    pairs_where: list[str] = typer.Option([], "--pairs-where", help="Row filter of --pairs, as --where."),
    out: Optional[Path] = _OUT, as_json: bool = _JSON, *, training: dict[str, Any],
) -> None:
    """Per-layer cosine between the task-loss and alignment-loss gradients of the transformer's own parameters.

    The companion study's measurement for joint alignment + task fine-tuning: near 0, the objectives are
    orthogonal. (`analyze gradients` measures the same on cached vectors, through an aligner.)
    """
    from embedstore.api import analyze_encoder_gradients

    result = analyze_encoder_gradients(train, pairs_file, text_column=text_column, label_column=label_column,
                                       source_column=source_column, target_column=target_column,
                                       model=model_option(model), batches=batches, where=where,
                                       pairs_where=pairs_where, out=out, **training)
    if not _finish(result, as_json, out):
        return
    prov = result["provenance"]
    _say(f"model {prov['model']} (fingerprint {prov['model_fingerprint'][:8]}); {result['batches']} minibatches of "
         f"{training['batch_size']} task rows and {training['batch_size']} pairs")
    table = Table(title="cos(∇ task loss, ∇ alignment loss) per layer")
    for column in ("parameters", "mean", "std", "min", "max"):
        table.add_column(column, justify="left" if column == "parameters" else "right")
    for group, s in [*result["layers"].items(), ("all", result["all_parameters"])]:
        table.add_row(group, *(f"{s[k]:+.3f}" for k in ("mean", "std", "min", "max")))
    console.print(table)
    n = result["gradient_norms"]
    _say(f"mean gradient norms: task {n['task']['mean']:.3g}, alignment {n['alignment']['mean']:.3g}")
