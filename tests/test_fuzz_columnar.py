"""Fuzzing the columnar readers (Parquet, Arrow file and stream, datasets directories): any table or any bytes
give the named columns or one line of the project's own error, never another exception."""
import json

import fuzz_profiles  # noqa: F401  (the hypothesis profile)
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
from hypothesis import given, strategies as st
import pytest

from embedstore.base.errors import EmbedstoreError
from embedstore.data.hashing import normalize
from embedstore.data.texts import read_table

pytestmark = pytest.mark.fault('fuzz: random columnar files (some valid)')

SUFFIXES = [".parquet", ".feather", ".arrow"]
cells = st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.floats(allow_nan=True),
                  st.lists(st.integers(0, 3), max_size=2), st.binary(max_size=3))


def refused_or(fn, *args):
    try:
        return fn(*args)
    except EmbedstoreError as e:
        assert "\n" not in str(e), str(e)
        return None


def write(path, table):
    if path.suffix == ".parquet":
        pq.write_table(table, path)
    elif path.suffix == ".feather":
        feather.write_feather(table, path)
    else:
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)


@given(suffix=st.sampled_from(SUFFIXES + ["dir"]), kind=st.integers(0, 6), values=st.lists(cells, max_size=6))
def test_fuzz_columnar_tables(tmp_path_factory, suffix, kind, values):
    values = [v for v in values if v is None or type(v) is type(cells_of_kind(kind))]
    try:
        table = pa.table({"text": pa.array(values, type=None if any(v is not None for v in values) else pa.string())})
    except (pa.ArrowException, TypeError, ValueError):
        return  # pyarrow cannot make that column; nothing to read
    base = tmp_path_factory.mktemp("c")
    if suffix == "dir":
        path = base / "ds"
        path.mkdir()
        write(path / "data-00000-of-00001.arrow", table)
        (path / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    else:
        path = base / f"input{suffix}"
        write(path, table)
    got = refused_or(read_table, path, ["text"])
    if got is not None:
        assert len(got["text"]) == len(values)
        assert all(cell and cell == normalize(cell) for cell in got["text"])


def cells_of_kind(kind):
    return ["", 0, True, 0.0, [0], b"", "x"][kind]


@given(suffix=st.sampled_from(SUFFIXES), data=st.binary(max_size=200))
def test_fuzz_columnar_bytes(tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("b") / f"input{suffix}"
    path.write_bytes(data)
    refused_or(read_table, path, ["text"])
