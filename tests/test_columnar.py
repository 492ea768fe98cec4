"""Parquet, Arrow (file and stream) and `datasets` save_to_disk inputs: the same texts and the same one-line
errors as the text formats, in the readers and through the CLI commands that take files."""
import json

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from embedstore.base.errors import ConfigError, InputError
from embedstore.cli.app import app
from embedstore.data.tasks import Source, load_rows
from embedstore.data.texts import read_table, read_texts
from embedstore.encoding.encode import iter_inputs

TEXTS = ["He said \"hi\"", "둘째 문장", "third, with comma"]


def write_stream(path, table):
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def save_dataset_dir(path, table, shards=2):
    """What `Dataset.save_to_disk` writes (Arrow streams listed in state.json), built without `datasets`."""
    path.mkdir()
    names = []
    step = -(-table.num_rows // shards)
    for i in range(shards):
        name = f"data-{i:05d}-of-{shards:05d}.arrow"
        write_stream(path / name, table.slice(i * step, step))
        names.append({"filename": name})
    (path / "state.json").write_text(json.dumps({"_data_files": names, "_split": None}))
    (path / "dataset_info.json").write_text("{}")
    return path


def every_format(tmp_path, table):
    pq.write_table(table, tmp_path / "a.parquet")
    feather.write_feather(table, tmp_path / "a.feather")
    write_stream(tmp_path / "a.arrow", table)
    save_dataset_dir(tmp_path / "ds", table)
    return [tmp_path / "a.parquet", tmp_path / "a.feather", tmp_path / "a.arrow", tmp_path / "ds"]


def test_every_columnar_format_reads_the_same_texts(tmp_path):
    table = pa.table({"text": TEXTS, "label": [0, 1, 0], "flag": [True, False, True]})
    for path in every_format(tmp_path, table):
        assert read_texts(path) == TEXTS, path
        assert read_table(path, ["label", "flag"]) == {"label": ["0", "1", "0"], "flag": ["true", "false", "true"]}


def test_a_dataset_saved_by_the_datasets_library_reads_in_its_saved_order(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, 2]}).select([2, 0])
    ds.save_to_disk(str(tmp_path / "ds"))
    assert read_table(tmp_path / "ds", ["text", "label"]) == {"text": [TEXTS[2], TEXTS[0]], "label": ["2", "0"]}
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match=r"dd: a datasets DatasetDict directory; name one split's directory: "
                                         r".*dd/train, .*dd/test"):
        read_texts(tmp_path / "dd")
    assert read_texts(tmp_path / "dd" / "test") == [TEXTS[2], TEXTS[0]]


def test_dictionary_encoded_strings_read_as_strings(tmp_path):
    table = pa.table({"text": pa.array(TEXTS).dictionary_encode()})
    pq.write_table(table, tmp_path / "a.parquet")
    assert read_texts(tmp_path / "a.parquet") == TEXTS


@pytest.mark.parametrize("values, message", [
    (["ok", None, "fine"], r"row 1: field 'text' is empty; expected a non-empty text"),
    (["ok", "fine", "   "], r"row 2: field 'text' is empty"),
    ([None, [1, 2], [3]], r"row 1: field 'text' holds a list<\w+: int64> value; expected a string"),
    ([None, None, 1.5], r"row 2: field 'text' holds a double value; expected a string"),
    ([b"x", b"y", b"z"], r"row 0: field 'text' holds a binary value"),
])
def test_cell_errors_name_the_row_and_field(tmp_path, values, message):
    pq.write_table(pa.table({"text": values}), tmp_path / "a.parquet")
    with pytest.raises(InputError, match=message) as e:
        read_texts(tmp_path / "a.parquet")
    assert str(tmp_path / "a.parquet") in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("index", range(4))
def test_cell_and_column_errors_in_every_format(tmp_path, index):
    table = pa.table({"en": ["a", "b", None], "fold": [1, 2, 3]})
    path = every_format(tmp_path, table)[index]
    with pytest.raises(InputError, match=r"no column 'text'; columns present: en, fold"):
        read_texts(path)
    with pytest.raises(InputError, match=r"row 2: field 'en' is empty"):
        read_texts(path, "en")


def test_missing_inputs_and_plain_directories_are_named(tmp_path):
    with pytest.raises(InputError, match=r"nope.parquet: no such file"):
        read_texts(tmp_path / "nope.parquet")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match=r"plain: a directory without state.json"):
        read_texts(tmp_path / "plain")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"bad.parquet: not a readable .parquet table"):
        read_texts(tmp_path / "bad.parquet")
    bad = tmp_path / "badds"
    bad.mkdir()
    (bad / "state.json").write_text(json.dumps({"_data_files": [{"filename": "../escape.arrow"}]}))
    with pytest.raises(InputError, match=r"data file '../escape.arrow' is not a file in"):
        read_texts(bad)


def test_where_filters_and_task_sources_read_columnar_files(tmp_path):
    table = pa.table({"en": ["a", "b", "c", "d"], "ko": ["가", "나", "다", "라"], "fold": [0, 1, 2, 1]})
    for path in every_format(tmp_path, table):
        rows = load_rows(Source(file=path, text="en", target="ko", where=(("fold", ("1",)),)))
        assert rows.texts == ["b", "d"] and rows.targets == ["나", "라"]


def test_encode_reads_several_columns_under_a_filter(tmp_path):
    table = pa.table({"en": ["a", "b", "c"], "ko": ["가", "나", "다"], "fold": [0, 1, 1]})
    pq.write_table(table, tmp_path / "p.parquet")
    def read_inputs(*args, **kwargs) -> list:
        return list(iter_inputs(*args, **kwargs))

    assert read_inputs([tmp_path / "p.parquet"], columns=["en", "ko"], where=(("fold", ("1",)),)) == \
        ["b", "c", "나", "다"]
    assert read_inputs([tmp_path / "p.parquet"], columns="en", pair_column="ko") == [("a", "가"), ("b", "나"),
                                                                                      ("c", "다")]
    with pytest.raises(ConfigError, match="pair_column 'ko' with 2 columns"):
        read_inputs([tmp_path / "p.parquet"], columns=["en", "ko"], pair_column="ko")
    with pytest.raises(ConfigError, match=r"p.parquet: no rows pass the filters \{'fold': \('7',\)\}"):
        read_inputs([tmp_path / "p.parquet"], columns=["en"], where=(("fold", ("7",)),))


def test_cli_encode_takes_several_columns_and_where_on_a_dataset_dir(tiny_model_dir, tmp_path):
    table = pa.table({"en": ["one", "two", "three"], "ko": ["하나", "둘", "셋"], "fold": [0, 1, 1]})
    save_dataset_dir(tmp_path / "ds", table)
    r = CliRunner().invoke(app, ["encode", str(tmp_path / "ds"), "-c", "en", "-c", "ko", "--where", "fold=1",
                                 "--model", str(tiny_model_dir), "--store", str(tmp_path / "s.zarr"), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["texts"] == 4 and report["encoded"] == 4


def test_a_sweep_task_reads_parquet_and_datasets_directories(tmp_path):
    from embedstore.data.tasks import Task

    table = pa.table({"en": ["a", "b", "c", "d"], "ko": ["가", "나", "다", "라"], "apps": ["x", "y", "x", "y"],
                      "fold": [6, 6, 8, 8]})
    pq.write_table(table, tmp_path / "task.parquet")
    save_dataset_dir(tmp_path / "ds", table)
    task = Task.from_table("topic", {
        "en_train": {"file": "task.parquet", "text": "en", "label": "apps", "where": {"fold": [6]}},
        "test": {"file": "ds", "text": "{lang}", "label": "apps", "where": {"fold": [8]}}}, "ko", tmp_path)
    assert task.rows("en_train").texts == ["a", "b"] and task.rows("test").texts == ["다", "라"]
    files = task.files()
    assert files["en_train"]["path"].endswith("task.parquet") and files["test"]["path"].endswith("ds")
    assert all(len(f["sha256"]) == 64 for f in files.values())
