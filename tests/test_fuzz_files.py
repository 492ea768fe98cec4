"""Fuzzing the readers of user files (issue 13, item 8): text tables (TSV, CSV, JSONL, txt), sweep configs
(TOML, with the task tables a run reads) and sweep results (JSONL). Any input gives a parsed value or the
project's own `EmbedstoreError` on one line, never another exception. Settings: `fuzz_profiles`."""
import json
import math
import tomllib
import warnings
from pathlib import Path

import fuzz_profiles  # noqa: F401  (the hypothesis profile)
from hypothesis import example, given, strategies as st
import pytest

from embedstore.base.errors import EmbedstoreError
from embedstore.data.tasks import Task, load_rows
from embedstore.data.texts import FORMATS, read_table
from embedstore.study.cells import load_config
from embedstore.study.sweep import read_results

COLUMNS = ["text", "label", "en", "ko", ""]
# pieces of the formats' syntax (separators, quotes, braces, line ends, NUL, a BOM, non-ASCII) mixed with any text
SYNTAX = st.sampled_from(list('\t,"\'{}[]:\n\r\x00\ufeff\\ ') + ["text", "label", "en", "ko", "null", "1", "é", "한"])
table_text = st.lists(SYNTAX | st.text(max_size=5), max_size=40).map("".join)


def refused_or(fn, *args, **kwargs):
    """Call a reader: its value, or None when it refused with one line of the project's own error type."""
    try:
        return fn(*args, **kwargs)
    except EmbedstoreError as e:
        assert "\n" not in str(e), str(e)
        return None


@given(suffix=st.sampled_from(sorted(FORMATS)), text=table_text, columns=st.lists(st.sampled_from(COLUMNS),
       min_size=1, max_size=3, unique=True))
@example(suffix=".jsonl", text="[" * 100_000, columns=["text"])
@example(suffix=".csv", text="text\n\x00\n", columns=["text"])
@example(suffix=".csv", text="text\n" + "x" * 200_000 + "\n", columns=["text"])
@pytest.mark.fault('fuzz: random text tables, sweep configs and results files (some valid)')
def test_fuzz_text_tables(tmp_path_factory, suffix, text, columns):
    path = tmp_path_factory.mktemp("t") / f"input{suffix}"
    path.write_text(text, encoding="utf-8")
    table = refused_or(read_table, path, columns)
    if table is not None:
        assert list(table) == columns and len({len(v) for v in table.values()}) == 1
        assert all(cell and cell == cell.strip() for values in table.values() for cell in values)


@given(suffix=st.sampled_from(sorted(FORMATS)), data=st.binary(max_size=200))
@pytest.mark.fault('fuzz: random text tables, sweep configs and results files (some valid)')
def test_fuzz_text_table_bytes(tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("b") / f"input{suffix}"
    path.write_bytes(data)
    refused_or(read_table, path, ["text"])


VALID_CONFIG = {
    "name": "fuzz", "store": "cache/store.zarr", "model": "multilingual-e5-small",
    "grid": {"languages": ["ko"], "tasks": ["topic"], "methods": ["english", "langalign"], "task_sizes": ["1k"],
             "pair_sizes": ["all"], "aligners": ["procrustes"], "seeds": [0]},
    "tasks": {"topic": {"en_train": {"file": "data.tsv", "text": "en", "label": "apps"},
                        "test": {"file": "data.tsv", "text": "{lang}", "label": "apps", "where": {"fold": [8, 9]}}}},
    "encoding": {"layer": 1},
}
toml_scalars = (st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats() | st.text(max_size=8)
                | st.sampled_from(["all", "5k", "ko", "english", "procrustes", "/", "..", "~x", "a\x00b"]))
toml_values = st.recursive(toml_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def toml_dumps(value) -> str:
    """A TOML document of one table (inline tables inside), enough to write anything the fuzzer makes."""
    def scalar(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, float):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{json.dumps(k)} = {scalar(x)}" for k, x in v.items()) + "}"
        return str(v)
    return "".join(f"{json.dumps(k)} = {scalar(v)}\n" for k, v in value.items())


def mutate(config, path, value):
    """`config` with the value at `path` (keys, each taken modulo the keys there) replaced by `value`."""
    config = json.loads(json.dumps(config))
    node = config
    for i, step in enumerate(path):
        keys = list(node)
        key = keys[step % len(keys)]
        if i == len(path) - 1 or not isinstance(node[key], dict) or not node[key]:
            node[key] = value
            return config
        node = node[key]
    return config


def test_the_toml_writer_round_trips():
    assert tomllib.loads(toml_dumps(VALID_CONFIG)) == VALID_CONFIG


def check_sweep_config(path: Path) -> None:
    """load_config, then what a run does with each task table (Task.from_table, and its rows)."""
    config = refused_or(load_config, path)
    if config is None:
        return
    for name, table in config.tasks.items():
        for language in config.grid.languages:
            task = refused_or(Task.from_table, name, table, language, config.base_dir)
            for source in (task.sources.values() if task else ()):
                refused_or(load_rows, source)


@given(path=st.lists(st.integers(0, 20), min_size=1, max_size=4), value=toml_values)
@example(path=[1], value="a\x00b")  # store
@example(path=[2], value="./model\x00")  # model
@example(path=[4, 0, 0, 0], value="data\x00.tsv")  # tasks.topic.en_train.file
@pytest.mark.fault('fuzz: random text tables, sweep configs and results files (some valid)')
def test_fuzz_sweep_config_fields(tmp_path_factory, path, value):
    """One value of a valid sweep config, at any depth, replaced by any TOML value."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "data.tsv").write_text("en\tko\tapps\tfold\nhello\t안녕\tcalc\t8\n", encoding="utf-8")
    (root / "sweep.toml").write_text(toml_dumps(mutate(VALID_CONFIG, path, value)), encoding="utf-8")
    check_sweep_config(root / "sweep.toml")


@given(text=st.lists(SYNTAX | st.sampled_from(["=", "[grid]", "[tasks.x]", '"""', "'''"]) | st.text(max_size=5),
                     max_size=30).map("".join))
@pytest.mark.fault('fuzz: random text tables, sweep configs and results files (some valid)')
def test_fuzz_sweep_config_text(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("sweep") / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    check_sweep_config(path)


CELL_LINE = json.dumps({"cell_id": "abc", "status": "ok", "metrics": {"accuracy": 0.5}})
result_lines = st.lists(st.sampled_from([CELL_LINE, "{", "[]", '{"kind": 1}', '{"cell_id": 1, "status": "ok"}',
                                         '{"kind": "cosine", "cell_id": [1]}', "\x00", "\xff"]) | table_text,
                        max_size=6)


@given(lines=result_lines, end=st.sampled_from(["", "\n"]))
@example(lines=["[" * 100_000], end="\n")
@pytest.mark.fault('fuzz: random text tables, sweep configs and results files (some valid)')
def test_fuzz_results_file(tmp_path_factory, lines, end):
    path = tmp_path_factory.mktemp("results") / "results.jsonl"
    path.write_text("\n".join(lines) + end, encoding="utf-8", errors="surrogateescape")
    with warnings.catch_warnings():  # a partial last line is a warning; what is tested here is the outcome
        warnings.simplefilter("ignore")
        records = refused_or(read_results, path)
    assert records is None or all(isinstance(r, dict) for r in records)
