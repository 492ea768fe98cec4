"""Columnar inputs: Parquet, Arrow IPC (feather) files and Hugging Face `datasets` directories (`save_to_disk`).

Read with pyarrow alone. A `datasets` directory is Arrow IPC stream files listed in its `state.json`
(`_data_files`, in row order; `save_to_disk` writes any `select`/`shuffle` indices out first), so reading it
needs no `datasets` install: that package pins its own fsspec/huggingface-hub/pandas ranges and costs seconds to
import, for a layout pyarrow reads directly. A `DatasetDict` directory (`dataset_dict.json`) holds one such
directory per split; the user names the split's directory.

Rows are counted from 0, as `ds[i]` and `df.iloc[i]` count them, so an error's row is the one a user looks up.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

from embedstore.base.errors import InputError

COLUMNAR_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".arrow": "arrow", ".feather": "arrow",
                     ".ipc": "arrow"}
STATE_FILE, DATASET_DICT_FILE = "state.json", "dataset_dict.json"


def is_dataset_dir(path: Path) -> bool:
    return path.is_dir() and ((path / STATE_FILE).is_file() or (path / DATASET_DICT_FILE).is_file())


def _dataset_files(path: Path) -> list[Path]:
    """The Arrow files of a `save_to_disk` directory, in row order."""
    if (path / DATASET_DICT_FILE).is_file():
        try:
            splits = json.loads((path / DATASET_DICT_FILE).read_text(encoding="utf-8"))["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = []
        named = ", ".join(str(path / s) for s in splits if isinstance(s, str)) or "(none listed)"
        raise InputError(f"{path}: a datasets DatasetDict directory; name one split's directory: {named}")
    state_path = path / STATE_FILE
    try:
        state = json.loads(state_path.read_text(encoding="utf-8"))
        names = [entry["filename"] for entry in state["_data_files"]]
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise InputError(f"{state_path}: not valid JSON ({e}); expected a datasets save_to_disk state") from None
    except (KeyError, TypeError):
        raise InputError(f"{state_path}: no _data_files list of {{filename}} entries; expected a datasets "
                         "save_to_disk state") from None
    files = []
    for name in names:
        file = path / str(name)
        if Path(str(name)).name != name or not file.is_file():
            raise InputError(f"{state_path}: data file {name!r} is not a file in {path}")
        files.append(file)
    if not files:
        raise InputError(f"{state_path}: lists no data files")
    return files


def _read_arrow(file: Path, columns: Sequence[str] | None):
    """An Arrow IPC file (feather v2) or stream (what `datasets` writes), whichever the bytes are."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.memory_map(str(file)) as source:
        try:
            table = ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            table = ipc.open_stream(source).read_all()
    return table.select(list(columns)) if columns is not None else table


BATCH_ROWS = 8192
"""Rows per record batch read: a columnar input is read a batch at a time, so a caller that keeps nothing holds one
batch (a memory-mapped Arrow file is not even read until its batch is converted)."""


def read_columnar(path: Path, columns: Sequence[str]) -> tuple[list[str], Iterator[tuple[int, dict[str, list]]]]:
    """(every column name, (first row number, {column: Python values (None for nulls)}) per batch of `columns`).
    The header and the columns are checked at once; the batches are read as they are consumed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.is_dir():
            files = _dataset_files(path)
            header = list(_read_arrow(files[0], None).schema.names)
        elif COLUMNAR_SUFFIXES[path.suffix.lower()] == "parquet":
            header = list(pq.read_schema(path).names)
        else:
            header = list(_read_arrow(path, None).schema.names)
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from None
    _check_columns(path, header, columns)
    return header, _batches(path, columns)


def _batches(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, dict[str, list]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if path.is_dir():
            batches = (b for f in _dataset_files(path) for b in _read_arrow(f, columns).to_batches(BATCH_ROWS))
        elif COLUMNAR_SUFFIXES[path.suffix.lower()] == "parquet":
            batches = pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS, columns=list(columns))
        else:
            batches = _read_arrow(path, columns).to_batches(BATCH_ROWS)
        first = 0
        for batch in batches:
            yield first, {col: _values(path, col, batch.column(col), first) for col in columns}
            first += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, e) from None


def _unreadable(path: Path, e: Exception) -> InputError:
    return InputError(f"{path}: not a readable {path.suffix or 'Arrow'} table ({' '.join(str(e).split())})")


def _check_columns(path: Path, header: list[str], columns: Sequence[str]) -> None:
    for col in columns:
        if col not in header:
            raise InputError(f"{path}: no column '{col}'; columns present: {', '.join(header) or '(none)'}")


def _values(path: Path, col: str, column, first_row: int = 0) -> list:
    """Strings as they are; integers and booleans (labels, folds) as their text, as a JSONL reader sees them;
    anything else (floats, lists, structs, bytes) is refused at its first row, never silently stringified.
    `first_row`: the row number of the column's first value (a batch's offset in the file)."""
    import pyarrow.types as t

    kind = column.type
    if t.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if t.is_string(kind) or t.is_large_string(kind) or getattr(t, "is_string_view", lambda _: False)(kind):
        return column.to_pylist()
    if t.is_integer(kind):
        return [None if v is None else str(v) for v in column.to_pylist()]
    if t.is_boolean(kind):
        return [None if v is None else ("true" if v else "false") for v in column.to_pylist()]
    first = next((i for i, v in enumerate(column.is_null().to_pylist()) if not v), None)
    if first is None:
        return [None] * len(column)
    raise InputError(f"{path}: row {first_row + first}: field '{col}' holds a {kind} value; expected a string "
                     "(or an integer label)")
