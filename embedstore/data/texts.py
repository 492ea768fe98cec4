"""Reading user text files into validated columns.

Every problem is reported as one line naming the file, the line (or row) and the field, before anything is
encoded, so a bad row never leaves a half-finished store behind. Text formats are parsed here; Parquet, Arrow and
`datasets` directories by `columnar` (pyarrow, imported only when such an input is read), and both go through the
same column and cell checks.
"""
from __future__ import annotations

import csv
import io
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


def _decode(path: Path) -> str:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line}: invalid UTF-8 at byte {e.start}; expected UTF-8 text") from None


def _rows(path: Path, text: str, fmt: str) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row)]) for any supported format; line numbers are 1-based file lines."""
    if fmt == "txt":
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return [TXT_COLUMN], [(i, {TXT_COLUMN: line.rstrip("\r")}) for i, line in enumerate(lines, 1)]
    if fmt == "jsonl":
        rows, header = [], {}
        for i, line in enumerate(text.split("\n"), 1):
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
            header.update(dict.fromkeys(obj))
            rows.append((i, {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in obj.items()
                             if v is not None}))
        return list(header), rows
    if fmt == "tsv":
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            raise InputError(f"{path}: empty file; expected a header row")
        header = lines[0].rstrip("\r").split("\t")
        rows = []
        for i, line in enumerate(lines[1:], 2):
            cells = line.rstrip("\r").split("\t")
            if len(cells) != len(header):
                raise InputError(f"{path}: line {i}: {len(cells)} tab-separated fields; expected {len(header)}")
            rows.append((i, dict(zip(header, cells))))
        return header, rows
    reader = csv.reader(io.StringIO(text))
    try:
        return _csv_rows(path, reader)
    except csv.Error as e:  # a field over csv's size limit (131,072 characters)
        raise InputError(f"{path}: line {reader.line_num}: {e}; expected CSV text") from None


def _csv_rows(path: Path, reader: Any) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: empty file; expected a header row") from None
    rows = []
    for cells in reader:
        if not cells:
            continue
        if len(cells) != len(header):
            raise InputError(f"{path}: line {reader.line_num}: {len(cells)} fields; expected {len(header)}")
        rows.append((reader.line_num, dict(zip(header, cells))))
    return header, rows


def _located_rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """("line N" or "row N", row) for every data row of any supported input, after checking `columns` exist."""
    if path.is_dir() or path.suffix.lower() in COLUMNAR_SUFFIXES:
        from embedstore.data.columnar import is_dataset_dir, read_columnar

        if path.is_dir() and not is_dataset_dir(path):
            raise InputError(f"{path}: a directory without state.json; expected a file ({ACCEPTED})")
        if not path.exists():
            raise InputError(f"{path}: no such file")
        _, values = read_columnar(path, columns)
        n = len(values[columns[0]]) if columns else 0
        return ((f"row {i}", {col: values[col][i] for col in columns}) for i in range(n))
    header, rows = _rows(path, _decode(path), file_format(path))
    for col in columns:
        if col not in header:
            raise InputError(f"{path}: no column '{col}'; columns present: {', '.join(header) or '(none)'}")
    return ((f"line {line}", row) for line, row in rows)


def read_table(path: str | Path, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a TSV/CSV/JSONL/txt, Parquet or Arrow file or a `datasets` directory, NFC-normalised,
    every cell checked non-empty."""
    path = Path(path)
    out: dict[str, list[str]] = {col: [] for col in columns}
    any_rows = False
    for where, row in _located_rows(path, columns):
        any_rows = True
        for col in columns:
            value = normalize(row.get(col) or "")
            if not value:
                raise InputError(f"{path}: {where}: field '{col}' is empty; expected a non-empty text")
            out[col].append(value)
    if not any_rows:
        raise InputError(f"{path}: no data rows")
    return out


def read_texts(path: str | Path, column: str | None = None, pair_column: str | None = None) -> list[Text]:
    """Texts (or premise/hypothesis pairs) from one file; `column` defaults to 'text'."""
    column = column or TXT_COLUMN
    if pair_column is None:
        return list(read_table(path, [column])[column])
    table = read_table(path, [column, pair_column])
    return list(zip(table[column], table[pair_column]))
