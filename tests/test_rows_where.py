"""Issue 30.6: one rows-of-a-file value (`data.tasks.Source`) with `where` for every command that reads rows, so
`tune`, `finetune`, `adapt`, the analyses and `predict --file` take `--where` as `train-head` does."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from embedstore.base.errors import ConfigError
from embedstore.cli.app import app
from embedstore.data.tasks import parse_where
from embedstore.data.tasks import Source
from embedstore.text_training.data import read_task
from embedstore.text_training.options import TrainOptions
from embedstore.text_training.pairs import contrast_rows


@pytest.fixture
def table(fold_table):
    return fold_table(12)


def test_task_and_contrast_files_keep_only_the_rows_their_filters_pass(table):
    texts, labels = read_task(Source(table, "en", label="label", where=parse_where(["fold=0,1"])))
    assert texts == [f"text {i}" for i in range(12) if i % 3 != 2] and len(labels) == 8
    rows = contrast_rows(Source(table, "en", target="ko", where=parse_where(["fold=2"])), TrainOptions(val_fraction=0.25))
    left = rows.train[0] + rows.val[0]
    assert sorted(left) == sorted(f"text {i}" for i in (2, 5, 8, 11))
    assert all(r == t.replace("text", "ko") for t, r in zip(rows.train[0], rows.train[1]))
    with pytest.raises(ConfigError, match=r"rows.tsv: no rows pass the filters \{'fold': \('7',\)\}"):
        read_task(Source(table, "en", label="label", where=parse_where(["fold=7"])))


def test_a_filter_enters_the_runs_identity_and_provenance_and_no_filter_keeps_the_old_identity(table):
    plain, filtered = Source(table, "en", label="label"), Source(table, "en", label="label", where=parse_where(["fold=0"]))
    assert plain.columns == ["en", "label", None]  # as before filters existed: old runs resume
    assert filtered.columns == ["en", "label", None, {"fold": ("0",)}]
    record = filtered.record(4)
    assert record["where"] == {"fold": ["0"]} and record["rows"] == 4 and len(record["sha256"]) == 64


@pytest.mark.parametrize("command", ["tune", "finetune", "adapt", "lora-ta", "train-head", "train-aligner", "evaluate",
                                     "predict", "encode", "mine", "analyze cosine", "analyze retrieval",
                                     "analyze layers", "analyze gradients", "analyze encoder-gradients"])
def test_every_command_that_reads_rows_takes_where(command):
    assert "--where" in CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=200).output


def test_predict_reads_a_file_s_rows_through_the_filters(table, tiny_model_dir, tmp_path):
    import embedstore.api as api

    store, model = tmp_path / "s.zarr", str(tiny_model_dir)
    api.train_head(table, text_column="en", out=tmp_path / "pipe", store=store, model=model, progress=False)
    records = api.predict(tmp_path / "pipe", file=table, text_column="ko", where=["fold=2"], store=store, model=model)
    assert [r["text"] for r in records] == [f"ko {i}" for i in (2, 5, 8, 11)]
    with pytest.raises(ConfigError, match="where filters the rows of a file"):
        api.predict(tmp_path / "pipe", ["하나"], where=["fold=2"], store=store, model=model)


def test_texts_and_positives_keep_the_identity_their_runs_began_with(table):
    assert Source(table, "en", target="ko").columns == ["en", "ko"]
    assert Source(table, "en").columns == ["en", None]
    assert Source(table, "en", target="ko", where=parse_where(["fold=2"])).columns == ["en", "ko", {"fold": ("2",)}]


def test_every_library_function_that_reads_rows_takes_the_one_rows_value():
    import inspect

    from embedstore.analysis.mining import run_mine
    from embedstore.analysis.runs import run_cosine, run_gradients, run_layers, run_retrieval
    from embedstore.pipelines.steps import evaluate, train_aligner, train_head
    from embedstore.text_training.adapt import adapt
    from embedstore.text_training.finetune import finetune
    from embedstore.text_training.gradients import encoder_gradients
    from embedstore.text_training.lora_ta import lora_ta
    from embedstore.text_training.tune import tune

    readers = {tune: ["train"], finetune: ["train", "test", "pairs"], adapt: ["data"], lora_ta: ["train", "test"],
               encoder_gradients: ["task", "pairs"], train_aligner: ["pairs"], train_head: ["train"],
               evaluate: ["test"], run_mine: ["source", "target"], run_cosine: ["pairs"], run_retrieval: ["pairs"],
               run_layers: ["pairs"], run_gradients: ["pairs"]}
    for function, names in readers.items():
        parameters = inspect.signature(function).parameters
        for name in names:
            assert parameters[name].annotation in ("Source", "Source | None"), (function.__qualname__, name)
