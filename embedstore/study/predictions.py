"""Per-test-row predictions of sweep cells, kept beside the results file.

A cell's record holds its metrics, which are enough for a table but not for a verdict: whether method A beats
method B on this test set is a question about the rows both were scored on (see `study.verdicts`), so each cell
also keeps what its head predicted for every test row. They live in `<results>.predictions/`, one small
safetensors file per cell (`<cell id>-<context>.safetensors`: the predicted and true labels as integer codes,
the head's predictions at C one decade either side of its own (`predicted@C/10`, `predicted@C*10`, where the
head has a C: a verdict is re-checked there), the label names and the test rows' identity in its metadata),
never pickled; the record names its file and the
test rows' digest, so two records can be checked for "the same test rows, in the same order" without opening
anything. Records written before predictions were kept simply have no "predictions" entry.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save

from embedstore.base.atomic import write_bytes
from embedstore.base.errors import InputError
from embedstore.data.hashing import text_ids

SUFFIX = ".predictions"
_FORMAT = "embedstore.predictions/1"
_AT = "predicted@"  # tensors of the head refitted at another C: "predicted@C/10"


def rows_digest(texts: Sequence[Any]) -> str:
    """The identity of an ordered list of rows (their text ids, in order): equal digests, same test rows."""
    return hashlib.sha256(text_ids(list(texts)).tobytes()).hexdigest()[:16]


def index_digest(indices: np.ndarray) -> str:
    """The identity of a draw of row positions (which training rows a seed picked)."""
    return hashlib.sha256(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class RowPredictions:
    """What one cell's head predicted for each test row, with the truth, as codes into `labels`."""

    labels: tuple[str, ...]
    truth: np.ndarray
    predicted: np.ndarray
    test_ids: str
    #: The same head refitted at another regularisation ("C/10", "C*10"): its predictions, as codes into `labels`.
    at_C: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, truth: Sequence[str], predicted: Sequence[str], test_ids: str,
           at_C: dict[str, Sequence[str]] | None = None) -> RowPredictions:
        at_C = at_C or {}
        labels = tuple(sorted({str(x) for x in truth} | {str(x) for x in predicted}
                              | {str(x) for other in at_C.values() for x in other}))
        code = {label: i for i, label in enumerate(labels)}

        def codes(values: Sequence[str]) -> np.ndarray:
            return np.array([code[str(x)] for x in values], dtype=np.int32)

        return cls(labels, codes(truth), codes(predicted), test_ids, {k: codes(v) for k, v in at_C.items()})

    @property
    def correct(self) -> np.ndarray:
        return self.truth == self.predicted

    def at(self, name: str) -> RowPredictions | None:
        """These rows as the head refitted at `name` ("C/10", "C*10") predicted them; None if it was not."""
        if name not in self.at_C:
            return None
        return replace(self, predicted=self.at_C[name], at_C={})

    def to_payload(self) -> dict[str, Any]:
        """Plain JSON data: how a worker process hands the predictions to the sweep's single writer."""
        return {"labels": list(self.labels), "truth": self.truth.tolist(), "predicted": self.predicted.tolist(),
                "test_ids": self.test_ids, "at_C": {k: v.tolist() for k, v in self.at_C.items()}}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RowPredictions:
        return cls(tuple(payload["labels"]), np.asarray(payload["truth"], dtype=np.int32),
                   np.asarray(payload["predicted"], dtype=np.int32), str(payload["test_ids"]),
                   {k: np.asarray(v, dtype=np.int32) for k, v in payload.get("at_C", {}).items()})


def directory(results: Path) -> Path:
    return Path(results).with_suffix(SUFFIX)


def write(results: Path, cell_id: str, context: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Save one cell's predictions atomically beside `results`; returns the record's "predictions" entry."""
    rows = RowPredictions.from_payload(payload)
    dtype = np.uint8 if len(rows.labels) <= 256 else np.uint16 if len(rows.labels) <= 65536 else np.int32
    name = f"{cell_id}-{context}.safetensors"
    tensors = {"truth": rows.truth, "predicted": rows.predicted,
               **{f"{_AT}{at}": predicted for at, predicted in rows.at_C.items()}}
    data = save({key: value.astype(dtype) for key, value in tensors.items()},
                metadata={"format": _FORMAT, "cell_id": cell_id, "context": context, "test_ids": rows.test_ids,
                          "labels": json.dumps(list(rows.labels), ensure_ascii=False)})
    target = directory(results) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(target, data)
    return {"file": name, "test_ids": rows.test_ids, "rows": int(rows.truth.size)}


class PredictionReader:
    """Loads the predictions a record names (cached), from the `.predictions` directory beside `results`.

    Returns None for a record that has none (written before they were kept, or an end-to-end cell); a record
    that names a file which is missing, damaged or another cell's is an error, never a silent fallback.
    """

    def __init__(self, results: str | Path):
        self.directory = directory(Path(results))
        self._cache: dict[str, RowPredictions] = {}

    def __call__(self, record: dict[str, Any]) -> RowPredictions | None:
        entry = record.get("predictions")
        if not entry:
            return None
        name = entry["file"]
        if name not in self._cache:
            self._cache[name] = self._load(self.directory / name, record)
        return self._cache[name]

    def _load(self, path: Path, record: dict[str, Any]) -> RowPredictions:
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                truth, predicted = f.get_tensor("truth"), f.get_tensor("predicted")
                at_C = {key[len(_AT):]: f.get_tensor(key).astype(np.int32) for key in f.keys() if key.startswith(_AT)}
        except FileNotFoundError:
            raise InputError(f"{path}: missing; record {record['cell_id']} names it as its predictions") from None
        except Exception as exc:  # safetensors raises its own error types for a damaged header
            raise InputError(f"{path}: not a readable predictions file ({exc})") from None
        expected = {"format": _FORMAT, "cell_id": record["cell_id"], "context": record.get("context"),
                    "test_ids": record["predictions"]["test_ids"]}
        for key, value in expected.items():
            if meta.get(key) != value:
                raise InputError(f"{path}: metadata {key!r} is {meta.get(key)!r}, expected {value!r} (record "
                                 f"{record['cell_id']})")
        if truth.ndim != 1 or any(p.shape != truth.shape for p in (predicted, *at_C.values())):
            raise InputError(f"{path}: 'truth' {truth.shape} and the predictions {predicted.shape} are not one row each")
        return RowPredictions(tuple(json.loads(meta["labels"])), truth.astype(np.int32), predicted.astype(np.int32),
                              meta["test_ids"], at_C)
