"""Steps 2 and 3 on files, and what a trained pipeline is used for: `train-aligner`, `train-head`, `evaluate`,
`predict`, `export`. `arch`, `head` and `recipe` None mean the registries' defaults."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from embedstore.api.commands import command
from embedstore.api.values import PathLike, WhereLike, encoding_options, rows, settings_record, store_path
from embedstore.base.errors import ConfigError
from embedstore.base.progress import watched
from embedstore.data.hashing import Text
from embedstore.data.selection import parse_size
from embedstore.encoding.options import EncodeOptions

if TYPE_CHECKING:
    from embedstore.pipelines.pipeline import Pipeline


@command("train-aligner")
def train_aligner(pairs: PathLike, *, target_column: str, out: PathLike, source_column: str = "en",
                  arch: str | None = None, size: str | int = "all", reverse: bool = False,
                  where: WhereLike = None, seed: int = 0, recipe: str | None = None,
                  store: PathLike | None = None, encoding: EncodeOptions | None = None, progress: bool | None = None,
                  check_size: str | int = "all", **options: Any) -> dict:
    """`embedstore train-aligner`: fit an aligner on the pairs file's rows → `out`; returns its record (its
    `held_out`: retrieval and collapse on `check_size` of the file's pairs it was not fitted on)."""
    from embedstore.estimators.aligners import DEFAULT_ALIGNER
    from embedstore.estimators.training import DEFAULT_RECIPE
    from embedstore.pipelines.steps import train_aligner as run

    progress = watched(progress)
    record = run(rows(pairs, source_column, target=target_column, where=where), arch=arch or DEFAULT_ALIGNER,
                 out=Path(out), size=parse_size(size), reverse=reverse, seed=seed, recipe=recipe or DEFAULT_RECIPE,
                 store=store_path(store), options=encoding_options(encoding, **options), progress=progress,
                 check_size=parse_size(check_size))
    return {**record, "settings": settings_record(store, options)}


@command("train-head")
def train_head(train: PathLike, *, out: PathLike, text_column: str = "text", label_column: str = "label",
               size: str | int = "all", aligner: PathLike | None = None, share: bool = False,
               head: str | None = None, where: WhereLike = None, seed: int = 0, recipe: str | None = None,
               store: PathLike | None = None, encoding: EncodeOptions | None = None, progress: bool | None = None,
               head_params: Mapping[str, Any] | None = None, single_label: bool = False, **options: Any) -> dict:
    """`embedstore train-head`: a head on the English rows (behind `aligner` when given) → the pipeline
    directory `out`; returns its manifest. Load it with `Pipeline.load(out)`."""
    from embedstore.estimators.heads import DEFAULT_HEAD
    from embedstore.estimators.training import DEFAULT_RECIPE
    from embedstore.pipelines.steps import train_head as run

    progress = watched(progress)
    record = run(rows(train, text_column, label=label_column, where=where), out=Path(out), size=parse_size(size),
                 head=head or DEFAULT_HEAD, aligner_dir=Path(aligner) if aligner else None, share=share, seed=seed,
                 recipe=recipe or DEFAULT_RECIPE, store=store_path(store),
                 options=encoding_options(encoding, **options), progress=progress,
                 head_params=dict(head_params or {}), single_label=single_label)
    return {**record, "settings": settings_record(store, options)}


@command("evaluate")
def evaluate(pipeline: PathLike, test: PathLike, *, text_column: str = "text", label_column: str = "label",
             where: WhereLike = None, store: PathLike | None = None, model: PathLike | None = None,
             progress: bool | None = None, single_label: bool = False, out: PathLike | None = None) -> dict:
    """`embedstore evaluate`: accuracy, macro-F1, per class and confusion, the pipeline's own result first and
    the other (with or without the aligner) as a diagnostic; written to `out` (JSON) too when given."""
    from embedstore.base.atomic import check_writable, write_json
    from embedstore.pipelines.steps import evaluate as run

    progress = watched(progress)
    if out is not None:
        check_writable(Path(out))  # before the model loads, not after the evaluation
    result = run(Path(pipeline), rows(test, text_column, label=label_column, where=where), store=store_path(store),
                 model=model, progress=progress, single_label=single_label)
    result = {**result, "settings": settings_record(store, {}, ["store"])}  # the pipeline pins its encoding
    if out is not None:
        write_json(Path(out), result, indent=2)
    return result


def load_pipeline(directory: PathLike, *, store: PathLike | None = None, model: PathLike | None = None) -> Pipeline:
    """`Pipeline.load(directory, store=..., model=...)`, the store resolved as every command resolves it."""
    from embedstore.pipelines.pipeline import Pipeline

    return Pipeline.load(directory, store=store_path(store), model=model)


@command("predict")
def predict(pipeline: PathLike, texts: Sequence[Text] = (), *, file: PathLike | None = None,
            text_column: str = "text", where: WhereLike = None, store: PathLike | None = None,
            model: PathLike | None = None, progress: bool | None = None) -> list[dict[str, Any]]:
    """`embedstore predict`: one record per text (`texts`, then the texts of `file`'s `text_column` in the rows
    passing `where`): the text, its label and the probability of each class. `progress` None: the encode's bar (on
    stderr) on long inputs when a person watches (`Pipeline.vectors`)."""
    from embedstore.data.tasks import load_rows

    if where and file is None:
        raise ConfigError("predict: where filters the rows of a file; give the file too")
    items = list(texts) + (load_rows(rows(file, text_column, where=where)).texts if file is not None else [])
    if not items:
        raise ConfigError("predict: give texts, or a file of texts")
    return load_pipeline(pipeline, store=store, model=model).predict_records(items, progress=progress)


@command("export")
def export_pipeline(pipeline: PathLike, out: PathLike, *, format: str, model: PathLike | None = None,
                    tolerance: float | None = None, metrics: PathLike | None = None, push_to_hub: str | None = None,
                    revision: str | None = None, token: str | None = None, progress: bool | None = None) -> dict:
    """`embedstore export`: the pipeline as a sentence-transformers directory or one ONNX graph in `out`, checked
    against the torch pipeline on probe texts first; with `push_to_hub` ("ORG/NAME") then uploaded, its commit
    URL under "pushed". Returns the export record."""
    from embedstore.export.export import TOLERANCE, export_pipeline as run, push_to_hub as push

    progress = watched(progress)
    record = run(pipeline, out, format=format, model=model, tolerance=TOLERANCE if tolerance is None else tolerance,
                 metrics=metrics, progress=progress)
    if push_to_hub:
        record["pushed"] = push(out, push_to_hub, revision=revision, token=token)
    return record
