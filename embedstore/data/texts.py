"""Reading user text files into validated columns.

Every problem is reported as one line naming the file, the line (or row) and the field, before anything is
encoded, so a bad row never leaves a half-finished store behind. Text formats are parsed here; Parquet, Arrow and
`datasets` directories by `columnar` (pyarrow, imported only when such an input is read), and both go through the
same column and cell checks.
"""
from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from embedstore.base.errors import InputError
from embedstore.data.columnar import COLUMNAR_SUFFIXES
from embedstore.data.hashing import Text, normalize

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".txt": "txt"}
TXT_COLUMN = "text"
ACCEPTED = ", ".join([*FORMATS, *COLUMNAR_SUFFIXES]) + " or a datasets save_to_disk directory"


def file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown format '{path.suffix}'; expected one of {ACCEPTED}")
    return fmt


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line with its ending) of a UTF-8 file, read a line at a time: an input of any length
    costs the memory of its longest line (`embedstore encode` streams files far larger than it could hold)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            start = len(codecs.BOM_UTF8) if number == 1 and raw.startswith(codecs.BOM_UTF8) else 0
            try:
                line = raw[start:].decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"{path}: line {number}: invalid UTF-8 at byte {offset + start + e.start}; "
                                 "expected UTF-8 text") from None
            offset += len(raw)
            yield number, line


def _content(line: str) -> str:
    """A line without its ending (\\n, and any \\r before it)."""
    return line.removesuffix("\n").rstrip("\r")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    for i, line in _lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: line {i}: invalid JSON ({e.msg}); expected one object per line") from None
        except RecursionError:
            raise InputError(f"{path}: line {i}: JSON nested too deeply; expected one flat object per line") \
                from None
        if not isinstance(obj, dict):
            raise InputError(f"{path}: line {i}: expected a JSON object, got {type(obj).__name__}")
        yield i, {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in obj.items()
                  if v is not None}


def _jsonl_header(path: Path) -> list[str]:
    """Every key of a JSONL file, in order of first appearance (read only when a row lacks a column, to tell
    "no such column" from "this row's field is empty")."""
    header: dict[str, None] = {}
    for _, row in _jsonl_rows(path):
        header.update(dict.fromkeys(row))
    return list(header)


def _tsv_rows(path: Path, lines: Iterator[tuple[int, str]], header: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    for i, line in lines:
        cells = _content(line).split("\t")
        if len(cells) != len(header):
            raise InputError(f"{path}: line {i}: {len(cells)} tab-separated fields; expected {len(header)}")
        yield i, dict(zip(header, cells))


def _csv_rows(path: Path, reader: Any, header: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        for cells in reader:
            if not cells:
                continue
            if len(cells) != len(header):
                raise InputError(f"{path}: line {reader.line_num}: {len(cells)} fields; expected {len(header)}")
            yield reader.line_num, dict(zip(header, cells))
    except csv.Error as e:  # a field over csv's size limit (131,072 characters)
        raise InputError(f"{path}: line {reader.line_num}: {e}; expected CSV text") from None


def _rows(path: Path, fmt: str) -> tuple[list[str] | None, Iterator[tuple[int, dict[str, str]]]]:
    """(header, rows as (line number, row)) for any text format, the rows read as they are consumed; line numbers
    are 1-based file lines. A JSONL file's header is None: its columns are known only once it is read through."""
    if fmt == "txt":
        return [TXT_COLUMN], ((i, {TXT_COLUMN: _content(line)}) for i, line in _lines(path))
    if fmt == "jsonl":
        return None, _jsonl_rows(path)
    if fmt == "tsv":
        lines = _lines(path)
        first = next(lines, None)
        if first is None:
            raise InputError(f"{path}: empty file; expected a header row")
        header = _content(first[1]).split("\t")
        return header, _tsv_rows(path, lines, header)
    reader = csv.reader(line for _, line in _lines(path))
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file; expected a header row") from None
    except csv.Error as e:
        raise InputError(f"{path}: line {reader.line_num}: {e}; expected CSV text") from None
    return header, _csv_rows(path, reader, header)


def _check_columns(path: Path, columns: Sequence[str], header: Sequence[str]) -> None:
    for col in columns:
        if col not in header:
            raise InputError(f"{path}: no column '{col}'; columns present: {', '.join(header) or '(none)'}")


def _located_rows(path: Path, columns: Sequence[str]) -> tuple[list[str] | None, Iterator[tuple[str, dict[str, Any]]]]:
    """(header or None, ("line N" or "row N", row) for every data row) of any supported input; `columns` are
    checked against the header when there is one (JSONL: by `iter_rows` as it meets a row without them)."""
    if path.is_dir() or path.suffix.lower() in COLUMNAR_SUFFIXES:
        from embedstore.data.columnar import is_dataset_dir, read_columnar

        if path.is_dir() and not is_dataset_dir(path):
            raise InputError(f"{path}: a directory without state.json; expected a file ({ACCEPTED})")
        if not path.exists():
            raise InputError(f"{path}: no such file")
        _, batches = read_columnar(path, columns)
        return list(columns), ((f"row {first + i}", {col: values[col][i] for col in columns})
                               for first, values in batches for i in range(len(values[columns[0]]) if columns else 0))
    header, rows = _rows(path, file_format(path))
    if header is not None:
        _check_columns(path, columns, header)
    return header, ((f"line {line}", row) for line, row in rows)


def iter_rows(path: str | Path, columns: Sequence[str]) -> Iterator[dict[str, str]]:
    """The named columns of each row of a TSV/CSV/JSONL/txt, Parquet or Arrow file or a `datasets` directory,
    NFC-normalised, every cell checked non-empty; text files are read as the rows are consumed, so a caller that
    keeps nothing holds one row at a time. The header is checked before the first row is given."""
    path = Path(path)
    header, rows = _located_rows(path, columns)
    any_rows = False
    for where, row in rows:
        any_rows = True
        out = {}
        for col in columns:
            value = normalize(row.get(col) or "")
            if not value:
                if header is None:
                    _check_columns(path, columns, _jsonl_header(path))
                raise InputError(f"{path}: {where}: field '{col}' is empty; expected a non-empty text")
            out[col] = value
        yield out
    if not any_rows:
        if header is None:
            _check_columns(path, columns, [])
        raise InputError(f"{path}: no data rows")


def read_table(path: str | Path, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a file (`iter_rows`), whole."""
    out: dict[str, list[str]] = {col: [] for col in columns}
    for row in iter_rows(path, columns):
        for col in columns:
            out[col].append(row[col])
    return out


def read_texts(path: str | Path, column: str | None = None, pair_column: str | None = None) -> list[Text]:
    """Texts (or premise/hypothesis pairs) from one file; `column` defaults to 'text'."""
    column = column or TXT_COLUMN
    if pair_column is None:
        return list(read_table(path, [column])[column])
    table = read_table(path, [column, pair_column])
    return list(zip(table[column], table[pair_column]))
