"""Task data as experiments see it: which rows of which files are English training data, target-language
test data, translations and aligner pairs.

A task is described once (a `[tasks.<name>]` table of a sweep config, or the demo's built-in description) with
`{lang}` standing for the target language, so one description serves ko, ja and zh alike. Row filters
(`where`) select folds or splits, which is how aligner pairs, task rows and test rows are kept apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from embedstore.base.errors import ConfigError
from embedstore.base.files import input_mtime_ns
from embedstore.base.provenance import file_identity
from embedstore.base.schema import check_keys, did_you_mean, names_of
from embedstore.data.texts import iter_rows, read_table

#: Row filters: (column, allowed values) pairs; a row passes when every column holds one of its values.
Where = tuple[tuple[str, tuple[str, ...]], ...]

ROLES = ("en_train", "translated_train", "native_train", "test", "en_test", "pairs")


@dataclass(frozen=True)
class Source:
    """Rows of one file, the one value every command that reads rows takes: a text column (plus `pair`, the
    second text of an NLI input), a label column (task data) or a target column (aligner pairs, a contrastive
    objective's positives), and the row filters `where` (`parse_where`)."""

    file: Path
    text: str = "text"
    pair: str | None = None
    label: str | None = None
    target: str | None = None
    where: Where = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "file", Path(self.file))

    def identity(self, **extra: Any) -> dict[str, Any]:
        """The file as provenance names it (`base.provenance.file_identity`), with the columns and filter read."""
        return file_identity(self.file, **extra, text=self.text, pair=self.pair, label=self.label,
                             target=self.target, where={c: list(v) for c, v in self.where})

    def record(self, rows: int) -> dict[str, Any]:
        """Provenance of a run on `rows` of these rows."""
        return self.identity(rows=rows)

    @property
    def columns(self) -> list[Any]:
        """What a text-training run's identity names of its rows: task rows [text, label, pair], texts and
        positives [text, target], then the filters when there are any. The lists the two row classes this
        value replaced wrote, so runs begun before it (and before filters) keep resuming."""
        named = [self.text, self.label, self.pair] if self.label is not None else [self.text, self.target]
        return [*named, *([dict(self.where)] if self.where else [])]


@dataclass
class Rows:
    texts: list  # str, or (premise, hypothesis) tuples when the source has a `pair` column
    labels: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)


@lru_cache(maxsize=32)
def _table(path: Path, columns: tuple[str, ...], mtime_ns: int) -> dict[str, list[str]]:
    return read_table(path, columns)


def parse_where(items: Sequence[str]) -> Where:
    """CLI row filters: `fold=6,7` keeps rows whose `fold` column is 6 or 7; several filters all apply."""
    out = []
    for item in items:
        col, sep, values = item.partition("=")
        if not sep or not col or not values:
            raise ConfigError(f"where {item!r}: expected COLUMN=VALUE[,VALUE...], e.g. fold=6,7")
        out.append((col, tuple(v.strip() for v in values.split(","))))
    return tuple(out)


def _passing(rows: Iterable[dict[str, str]], file: Path, where: Where,
             single_label_column: str | None = None) -> Iterator[dict[str, str]]:
    """The rows that pass every `where` filter (and, with `single_label_column`, whose label is not a comma-joined
    list); a filter that keeps no row is an error, not an empty result."""
    allowed = [(col, frozenset(values)) for col, values in where]
    kept = False
    for row in rows:
        if all(row[col] in values for col, values in allowed) and \
                not (single_label_column and "," in row[single_label_column]):
            kept = True
            yield row
    if not kept:
        raise ConfigError(f"{file}: no rows pass the filters {dict(where)}")


def _with_filter_columns(file: Path, columns: Sequence[str], where: Where) -> tuple[str, ...]:
    if not file.exists():
        raise ConfigError(f"{file}: no such file")
    return tuple(dict.fromkeys((*columns, *(w for w, _ in where))))


def filtered_columns(file: Path, columns: Sequence[str], where: Where = (), *,
                     single_label_column: str | None = None) -> dict[str, list[str]]:
    """The named columns of the rows of `file` that pass `where` (`_passing`), from the file's cached table."""
    columns = _with_filter_columns(file, columns, where)
    where = tuple((col, tuple(values)) for col, values in where)
    kept = _filtered(file, columns, where, single_label_column, input_mtime_ns(file))
    return {col: list(values) for col, values in kept.items()}


@lru_cache(maxsize=32)
def _filtered(file: Path, columns: tuple[str, ...], where: Where, single_label_column: str | None,
              mtime_ns: int) -> dict[str, tuple[str, ...]]:
    """Kept per process, like the table it filters: a sweep's cells ask for the same few (file, filter) pairs
    over and over (each cell reads its task's roles, and every LangAlign cell all of them for the pairs'
    exclusion), and filtering a 75k-row table row by row took about a second each time."""
    table = _table(file, columns, mtime_ns)
    rows = (dict(zip(columns, values)) for values in zip(*(table[c] for c in columns)))
    kept = list(_passing(rows, file, where, single_label_column))
    return {col: tuple(row[col] for row in kept) for col in columns}


def iter_filtered(file: Path, columns: Sequence[str], where: Where = ()) -> Iterator[dict[str, str]]:
    """The rows `filtered_columns` gives, one at a time as the file is read (`data.texts.iter_rows`): for inputs
    too large to hold, which `embedstore encode` streams."""
    columns = _with_filter_columns(file, columns, where)
    return _passing(iter_rows(file, columns), file, where)


def load_rows(src: Source, *, single_label: bool = False) -> Rows:
    """The rows of `src` that pass its filters; `single_label` drops comma-joined multi-label rows."""
    columns = [c for c in (src.text, src.pair, src.label, src.target) if c]
    table = filtered_columns(src.file, columns, src.where,
                             single_label_column=src.label if single_label and src.label else None)
    pick = lambda col: table[col] if col else []  # noqa: E731
    texts = list(zip(pick(src.text), pick(src.pair))) if src.pair else pick(src.text)
    return Rows(texts=texts, labels=pick(src.label), targets=pick(src.target))


def where_from_table(table: object, key: str) -> Where:
    """A task table's row filter: column → one value or a list of values (strings or numbers, matched as text)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: {table!r}; expected a table of column = value or [values]")
    out = []
    for col, vals in sorted(table.items()):
        values = vals if isinstance(vals, list) else [vals]
        if not values or not all(isinstance(v, (str, int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{key}.{col}: {vals!r}; expected a value or a non-empty list of strings or numbers")
        out.append((col, tuple(str(v) for v in values)))
    return tuple(out)


@dataclass(frozen=True)
class Task:
    """One task for one target language; `single_label` drops rows whose label lists several (comma-joined)."""

    name: str
    language: str
    sources: dict[str, Source]
    single_label: bool = False

    @classmethod
    def from_table(cls, name: str, table: dict, language: str, base_dir: Path) -> "Task":
        sources = {}
        for role, spec in table.items():
            if role == "single_label":
                continue
            if role not in ROLES:
                raise ConfigError(f"tasks.{name}.{role}: unknown role{did_you_mean(role, ROLES)}; allowed: "
                                  f"{', '.join(ROLES)}, single_label")
            if not isinstance(spec, dict) or "file" not in spec or "text" not in spec:
                raise ConfigError(f"tasks.{name}.{role}: expected a table with at least 'file' and 'text'")
            check_keys(f"tasks.{name}.{role}.", spec, names_of(Source))
            for key in ("file", "text", "pair", "label", "target"):
                if key in spec and not (isinstance(spec[key], str) and spec[key] and "\x00" not in spec[key]):
                    raise ConfigError(f"tasks.{name}.{role}.{key}: {spec[key]!r}; expected a non-empty string "
                                      "(no NUL characters)")
            fill = lambda s: None if s is None else s.replace("{lang}", language)  # noqa: E731
            path = Path(fill(spec["file"]))
            where = where_from_table(spec.get("where", {}), f"tasks.{name}.{role}.where")
            sources[role] = Source(file=path if path.is_absolute() else (base_dir / path).resolve(),
                                   text=fill(spec["text"]), pair=fill(spec.get("pair")), label=fill(spec.get("label")),
                                   target=fill(spec.get("target")), where=where)
        for role in ("en_train", "test"):
            if role not in sources:
                raise ConfigError(f"tasks.{name}: missing '{role}' (every task needs English training rows and a test set)")
        return cls(name=name, language=language, sources=sources, single_label=bool(table.get("single_label", False)))

    def has(self, role: str) -> bool:
        return role in self.sources

    def rows(self, role: str) -> Rows:
        if role not in self.sources:
            raise ConfigError(f"task {self.name} has no '{role}' data; add tasks.{self.name}.{role} to the config")
        return load_rows(self.sources[role], single_label=self.single_label)

    def files(self) -> dict[str, dict[str, Any]]:
        """Each role's file identity, for a result's provenance."""
        return {role: src.identity() for role, src in self.sources.items()}
