"""Encoding streams its input (issue 29.3): files are read a row at a time, and an encode tokenizes, batches and
encodes a bounded chunk of distinct texts at a time, so its memory does not grow with the input. The peak-memory
figure (200k lines within 1.2x of 20k) is `benchmarks/stream_memory.py`'s; these tests hold the contract."""
import numpy as np
import pytest

from embedstore.base.errors import InputError
from embedstore.encoding import batching
from embedstore.encoding import encode as encode_module
from embedstore.encoding.encode import encode_files, encode_source, iter_inputs
from embedstore.encoding.options import ComputeOptions, EncodeOptions
from embedstore.store import Store

TEXTS = [f"sentence number {i} about {w}" for i, w in enumerate(["cells", "pages", "fonts", "tables"] * 3)]


def test_the_reader_gives_rows_before_it_has_read_the_file(tmp_path):
    """Line 3 is not UTF-8: a reader that materialised the file would fail before giving line 1."""
    path = tmp_path / "t.txt"
    path.write_bytes(b"first\nsecond\n\xff broken\n" + b"more\n" * 1000)
    texts = iter_inputs([path])
    assert next(texts) == "first" and next(texts) == "second"
    with pytest.raises(InputError, match=r"t.txt: line 3: invalid UTF-8"):
        next(texts)


def test_an_encode_tokenizes_bounded_chunks_and_equals_one_chunk(tiny_model_dir, tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("\n".join(TEXTS + TEXTS[:3]) + "\n")  # 15 lines, 12 distinct
    options, compute = EncodeOptions(model=str(tiny_model_dir)), ComputeOptions(batch_size=2, chunk_rows=3, backend="torch")
    whole = encode_files([path], store=tmp_path / "whole.zarr", options=options, compute=compute)

    sizes: list[int] = []
    tokenize = batching.tokenize
    monkeypatch.setattr(batching, "tokenize", lambda tok, texts, *a: sizes.append(len(texts)) or tokenize(tok, texts, *a))
    monkeypatch.setattr(encode_module, "CHUNK_TEXTS", 4)
    store = tmp_path / "chunked.zarr"
    encode_files([path], store=store, options=options, compute=compute)
    assert sizes == [4, 4, 4]  # 12 distinct texts, never more than a chunk at once
    reference = Store.open(whole.store).get(whole.keys[0], TEXTS)
    np.testing.assert_allclose(Store.open(store).get(whole.keys[0], TEXTS), reference, atol=1e-6)

    # resumed: 5 texts stored, the rest encoded in the same fixed chunks of ranks (texts 0-3, 4-7, 8-11)
    sizes.clear()
    resumed = tmp_path / "resumed.zarr"
    encode_source(lambda: TEXTS[:5], store=resumed, options=options, compute=compute)
    sizes.clear()
    report = encode_files([path], store=resumed, options=options, compute=compute)
    assert (report.texts, report.unique, report.present, report.encoded) == (15, 12, 5, 7)
    assert sizes == [3, 4]
    np.testing.assert_allclose(Store.open(resumed).get(whole.keys[0], TEXTS), reference, atol=1e-6)


def test_an_input_that_changes_between_its_two_readings_is_refused(tiny_model_dir, tmp_path):
    readings = iter([TEXTS, TEXTS[:6] + ["another text"] + TEXTS[7:]])
    with pytest.raises(InputError, match="the input changed while it was being encoded"):
        encode_source(lambda: next(readings), store=tmp_path / "s.zarr",
                      options=EncodeOptions(model=str(tiny_model_dir)))


def test_columnar_inputs_are_read_a_batch_at_a_time(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from embedstore.data import columnar

    monkeypatch.setattr(columnar, "BATCH_ROWS", 2)
    converted: list[int] = []
    values = columnar._values
    monkeypatch.setattr(columnar, "_values", lambda path, col, column, first=0: converted.append(len(column))
                        or values(path, col, column, first))
    pq.write_table(pa.table({"text": ["a", "b", "c", "d", ""]}), tmp_path / "t.parquet")
    texts = iter_inputs([tmp_path / "t.parquet"])
    assert [next(texts) for _ in range(3)] == ["a", "b", "c"] and converted == [2, 2]  # the third batch unread
    with pytest.raises(InputError, match=r"t.parquet: row 4: field 'text' is empty"):  # its row in the file
        list(texts)
