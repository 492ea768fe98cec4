"""Analyses and mining: `analyze cosine|retrieval|layers|gradients|encoder-gradients`, `mine`.

The held-out split of the `analyze` functions comes as `split=SplitOptions(...)` or as keywords named as its fields
(`fit_folds`/`test_folds` "0-5", "8,9" by `fold_column`, else a seeded `test_fraction`; `size` caps the fit rows and
`test_size` the held-out rows), beside the encoding options' keywords. Each returns its record, also written to
`out` (JSON; .jsonl appends) when given. `where` filters the pairs file's rows (`{"fold": [0, 1, 2]}` or
`["fold=0,1,2"]`), as every command that reads rows takes it; the split then divides the rows that pass.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from embedstore.api.commands import command
from embedstore.api.values import PathLike, WhereLike, encoding_options, rows, store_path
from embedstore.base.errors import ConfigError
from embedstore.base.progress import watched
from embedstore.encoding.options import EncodeOptions

if TYPE_CHECKING:  # its module imports the aligners (torch): on call, not on `import embedstore.api`
    from embedstore.analysis.runs import SplitOptions
    from embedstore.data.tasks import Source
    from embedstore.text_training.options import TrainOptions


def _held_out(pairs: PathLike, source_column: str, target_column: str, where: WhereLike, store: PathLike | None,
              progress: bool | None, split: SplitOptions | None, encoding: EncodeOptions | None,
              options: dict[str, Any], label_column: str | None = None) -> tuple[Source, dict[str, Any]]:
    """The pairs as the one rows value, and the keywords every held-out analysis takes: the split (given whole or
    as `SplitOptions`' fields among `options`), the encoding options (the rest of `options`), the store and
    whether progress shows."""
    from embedstore.analysis.runs import SplitOptions
    from embedstore.base.schema import names_of

    fields = {k: options.pop(k) for k in names_of(SplitOptions) if k in options}
    if split is not None and fields:
        raise ConfigError("give the split either as split=SplitOptions(...) or as keywords, not both")
    return (rows(pairs, source_column, label=label_column, target=target_column, where=where),
            {"split": split if split is not None else SplitOptions(**fields),
             "options": encoding_options(encoding, **options), "store": store_path(store),
             "progress": watched(progress)})


@command("analyze cosine")
def analyze_cosine(pairs: PathLike, *, source_column: str = "en", target_column: str = "ko",
                   arch: str | None = None, aligner: PathLike | None = None, where: WhereLike = None,
                   store: PathLike | None = None, seed: int = 0, out: PathLike | None = None,
                   progress: bool | None = None, split: SplitOptions | None = None,
                   encoding: EncodeOptions | None = None, **options: Any) -> dict[str, Any]:
    """Mean cosine EN↔TR, aligned↔TR, aligned↔EN and shuffled baselines (paper Table 9), with retrieval P@1 and
    the collapse check, on held-out pairs; `aligner`: a saved aligner directory instead of fitting `arch`."""
    from embedstore.analysis.runs import run_cosine

    source, common = _held_out(pairs, source_column, target_column, where, store, progress, split, encoding, options)
    return run_cosine(source, arch=arch, aligner_dir=aligner, seed=seed, out=out, **common)


@command("analyze retrieval")
def analyze_retrieval(pairs: PathLike, *, source_column: str = "en", target_column: str = "ko",
                      arch: str | None = None, aligner: PathLike | None = None, where: WhereLike = None,
                      store: PathLike | None = None, seed: int = 0, ks: Sequence[int] = (1, 5), csls_k: int = 10,
                      out: PathLike | None = None, progress: bool | None = None, split: SplitOptions | None = None,
                      encoding: EncodeOptions | None = None, **options: Any) -> dict[str, Any]:
    """P@k both ways, nearest neighbour and CSLS, raw and aligned, on held-out pairs."""
    from embedstore.analysis.runs import run_retrieval

    source, common = _held_out(pairs, source_column, target_column, where, store, progress, split, encoding, options)
    return run_retrieval(source, arch=arch, aligner_dir=aligner, seed=seed, ks=tuple(ks), csls_k=csls_k, out=out,
                         **common)


@command("analyze layers")
def analyze_layers(pairs: PathLike, *, source_column: str = "en", target_column: str = "ko",
                   arch: str | None = None, layers: Sequence[int] | None = None, where: WhereLike = None,
                   store: PathLike | None = None, seed: int = 0, ks: Sequence[int] = (1, 5), csls_k: int = 10,
                   out: PathLike | None = None, progress: bool | None = None, split: SplitOptions | None = None,
                   encoding: EncodeOptions | None = None, **options: Any) -> dict[str, Any]:
    """Cosine and retrieval per hidden layer (`layers`, default every one), a fresh aligner fitted on each."""
    from embedstore.analysis.runs import run_layers

    source, common = _held_out(pairs, source_column, target_column, where, store, progress, split, encoding, options)
    return run_layers(source, arch=arch, layers=tuple(layers or ()), seed=seed, ks=tuple(ks), csls_k=csls_k, out=out,
                      **common)


@command("analyze gradients")
def analyze_gradients(pairs: PathLike, *, label_column: str, source_column: str = "en", target_column: str = "ko",
                      arch: str | None = None, aligner: PathLike | None = None, head: str | None = None,
                      batch_size: int = 64, where: WhereLike = None, store: PathLike | None = None, seed: int = 0,
                      out: PathLike | None = None, progress: bool | None = None, split: SplitOptions | None = None,
                      encoding: EncodeOptions | None = None, **options: Any) -> dict[str, Any]:
    """Cosine between alignment-loss and task-loss gradients on the shared representation (held-out rows);
    `arch` "none": raw vectors through an identity linear map."""
    from embedstore.analysis.runs import run_gradients
    from embedstore.estimators.heads import DEFAULT_HEAD

    source, common = _held_out(pairs, source_column, target_column, where, store, progress, split, encoding, options,
                               label_column)
    return run_gradients(source, arch=arch, aligner_dir=aligner, head=head or DEFAULT_HEAD, batch_size=batch_size,
                         seed=seed, out=out, **common)


@command("analyze encoder-gradients")
def analyze_encoder_gradients(train: PathLike, pairs: PathLike, *, text_column: str = "text",
                              label_column: str = "label", source_column: str = "en", target_column: str = "ko",
                              model: PathLike | None = None, batches: int = 8, where: WhereLike = None,
                              pairs_where: WhereLike = None, out: PathLike | None = None,
                              options: TrainOptions | None = None, **training: Any) -> dict[str, Any]:
    """Per-layer cosine between the task-loss and alignment-loss gradients of the transformer's own parameters
    (`model` None: the project's), on `batches` minibatches of task rows (`where` filters them) and pairs
    (`pairs_where`). `training`: the `TrainOptions` fields it reads (`GRADIENT_OPTIONS`: batch_size, max_length,
    size, val_fraction, head (default "linear"), seed, device), or `options`."""
    from embedstore.analysis.runs import check_record_writable, write_record
    from embedstore.api.text import train_options
    from embedstore.text_training.gradients import encoder_gradients
    from embedstore.text_training.options import GRADIENT_DEFAULTS, GRADIENT_OPTIONS

    options = train_options(options, training, allowed=GRADIENT_OPTIONS, defaults=GRADIENT_DEFAULTS)
    check_record_writable(out)  # before the encoder is trained, not after
    result = encoder_gradients(rows(train, text_column, label=label_column, where=where),
                               rows(pairs, source_column, target=target_column, where=pairs_where), model=model,
                               options=options, batches=batches)
    if out is not None:
        write_record(result, out)
    return result


@command("mine")
def mine(source_file: PathLike, target_file: PathLike, *, out: PathLike, source_column: str = "en",
         target_column: str = "ko", names: tuple[str, str] | None = None, k: int | None = None,
         min_margin: float | None = None, where: WhereLike = None, store: PathLike | None = None,
         progress: bool | None = None, encoding: EncodeOptions | None = None, **options: Any) -> dict[str, Any]:
    """Translation pairs mined between two unpaired files (mutual best candidates by LASER's ratio margin, `k`
    neighbours, default 4), written with their margins to `out` (.tsv or .jsonl) under the column `names`
    (default: the two columns'); `where` filters both files. Returns the run's record."""
    from embedstore.analysis.mining import MARGIN_K, run_mine

    progress = watched(progress)
    return run_mine(rows(source_file, source_column, where=where), rows(target_file, target_column, where=where),
                    Path(out), names=names, k=MARGIN_K if k is None else k, min_margin=min_margin,
                    store=store_path(store), options=encoding_options(encoding, **options), progress=progress)
