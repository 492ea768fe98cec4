"""A trained LangAlign pipeline on disk: its encoding options, the aligner (if any) and the head.

One directory that loads with one call and answers on new target-language text: `Pipeline.load(dir)`, then
`predict(texts)` encodes what the store lacks and runs aligner → head. Everything is JSON + safetensors.
This module is the only one that writes or reads `pipeline.json`, so the two can never disagree about it.
A pipeline directory is data, not instructions: every manifest field is checked on loading, the encoding
options pin the model's fingerprint, and an aligner or head fitted under another store key is refused. No path
written in it is followed: the store it was trained with is provenance (the caller names the store to use), and
a model recorded as a path is used only when the caller names that directory again (and its fingerprint fits).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from safetensors.numpy import save_file

from embedstore.base.atomic import atomic_dir
from embedstore.base.progress import bars_on_stderr, watched_long
from embedstore.base.errors import ConfigError, InputError
from embedstore.base.schema import check_keys
from embedstore.encoding.models import is_model_path
from embedstore.encoding.settings import default_store, project_settings
from embedstore.data.hashing import ID_BYTES
from embedstore.encoding.encode import embed
from embedstore.encoding.models import ModelSpec
from embedstore.encoding.options import EncodeOptions
from embedstore.estimators.aligners import Aligner, load_aligner
from embedstore.estimators.artifacts import read_arrays
from embedstore.estimators.heads import Head, load_head
from embedstore.pipelines.fitted_key import check_fitted_key
from embedstore.store import StoreKey

MANIFEST = "pipeline.json"
PAIR_IDS = "pair_ids.safetensors"
ALIGNER_DIR, HEAD_DIR = "aligner", "head"

# every field a manifest may hold, with the JSON types it may take; the first group is required
_REQUIRED: dict[str, tuple[type, ...]] = {"kind": (str,), "store": (str,), "encoding": (dict,),
                                          "aligner": (str, type(None)), "head": (str,)}
_OPTIONAL: dict[str, tuple[type, ...]] = {
    "embedstore_version": (str,), "hostname": (str,), "written_at": (str,), "head_kind": (str,), "seed": (int,),
    "recipe": (str,), "train": (dict,), "share": (bool,), "sizes": (dict,), "model": (str,), "seconds": (int, float)}
# written by older versions, still read (and ignored: `encoding` pins the fingerprint and gives the key)
_LEGACY: dict[str, tuple[type, ...]] = {"embedstore": (str,), "model_fingerprint": (str,), "store_key": (dict,)}


def save_pair_ids(directory: Path, source_ids: np.ndarray, target_ids: np.ndarray) -> None:
    """An aligner remembers the hashes of its training pairs, so task rows can be kept disjoint later."""
    save_file({"source": source_ids, "target": target_ids}, str(directory / PAIR_IDS))


def load_pair_ids(directory: Path) -> np.ndarray:
    """The aligner's pair hashes ((n, ID_BYTES) uint8; none when the file is absent), checked like any array."""
    path = directory / PAIR_IDS
    if not path.is_file():
        return np.zeros((0, ID_BYTES), np.uint8)
    ids = read_arrays(path)
    for name in ("source", "target"):
        value = ids.get(name)
        if value is None or value.dtype != np.uint8 or value.ndim != 2 or value.shape[1] != ID_BYTES:
            got = "missing" if value is None else f"{value.dtype} {value.shape}"
            raise InputError(f"{path}: {name}: {got}; expected (n, {ID_BYTES}) uint8 text ids")
    return np.concatenate([ids["source"], ids["target"]])


def save_pipeline(out: Path, head: Head, aligner_dir: Path | None, manifest: dict[str, Any],
                  key: StoreKey) -> dict[str, Any]:
    """Write the pipeline directory whole or not at all; returns the manifest as written. The head's provenance
    is the manifest plus the store key it was fitted on (`key`), so the head alone still says which key that was;
    the manifest itself names the weights once, in `encoding`."""
    manifest = {**manifest, "kind": "pipeline", "aligner": ALIGNER_DIR if aligner_dir else None, "head": HEAD_DIR}
    _check_manifest(manifest, Path(MANIFEST))
    with atomic_dir(out, replace=True) as tmp:
        head.save(tmp / HEAD_DIR, provenance={**manifest, "store_key": key.to_dict()})
        if aligner_dir:
            shutil.copytree(aligner_dir, tmp / ALIGNER_DIR)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return manifest


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not path.is_file():
        raise ConfigError(f"{directory}: not a pipeline directory (no {MANIFEST}); make one by training a head")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    _check_manifest(manifest, path)
    return manifest


def _check_manifest(manifest: object, path: Path) -> None:
    """Known keys with the expected types; the subdirectory names may only be the ones `save_pipeline` writes,
    so a manifest cannot point the loader outside its directory."""
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    fields = {**_REQUIRED, **_OPTIONAL, **_LEGACY}
    check_keys(f"{path}: ", manifest, fields)
    for name, value in manifest.items():
        if isinstance(value, bool) and bool not in fields[name] or not isinstance(value, fields[name]):
            expected = " or ".join("null" if t is type(None) else t.__name__ for t in fields[name])
            raise ConfigError(f"{path}: {name}: {value!r}; expected {expected}")
    for name in _REQUIRED:
        if name not in manifest:
            raise ConfigError(f"{path}: {name}: missing")
    for name, allowed in (("kind", ("pipeline",)), ("aligner", (ALIGNER_DIR, None)), ("head", (HEAD_DIR,))):
        if manifest[name] not in allowed:
            raise ConfigError(f"{path}: {name}: {manifest[name]!r}; expected {' or '.join(map(repr, allowed))}")


def _encoding(manifest: Mapping[str, Any], path: Path, model: str | os.PathLike[str] | None) -> EncodeOptions:
    """The manifest's encoding options, which must pin the weights and one layer; `model` (the caller's) replaces
    the recorded model, and a recorded path is refused without it: a pipeline directory cannot send the loader to
    read files elsewhere."""
    options = EncodeOptions.from_dict(manifest["encoding"], f"{path}: encoding")
    if options.fingerprint is None:
        raise ConfigError(f"{path}: encoding.fingerprint: missing; expected the model fingerprint the head was "
                          "trained with")
    if len(options.layers) != 1:
        raise ConfigError(f"{path}: encoding.layers: {list(options.layers)}; expected exactly one layer")
    if model is None and is_model_path(options.model):  # named again by the project's settings (env or file)?
        model = project_settings().get("model")
    if model is not None:
        return replace(options, model=os.fspath(model))
    if is_model_path(options.model):
        raise ConfigError(f"{path}: encoding.model: {options.model!r} is a path, and paths in a saved pipeline are "
                          f"not followed; name the model directory with the model parameter or EMBEDSTORE_MODEL "
                          f"(its fingerprint must be {options.fingerprint})")
    return options




@dataclass
class Pipeline:
    encode_options: EncodeOptions
    key: StoreKey
    store: str
    aligner: Aligner | None
    head: Head
    manifest: dict
    spec: ModelSpec  # the model as loading resolved it: predictions and exports do not resolve it again

    @classmethod
    def load(cls, directory: str | Path, *, store: str | Path | None = None,
             model: str | os.PathLike[str] | None = None) -> "Pipeline":
        """Check and load a pipeline directory. `store`: where vectors are read and new ones written (default
        `default_store()`; never the store recorded in the manifest); `model`: the model directory when the
        manifest records one by path (its fingerprint must be the pinned one)."""
        directory = Path(directory)
        path = directory / MANIFEST
        manifest = _read_manifest(directory)
        options = _encoding(manifest, path, model)
        try:
            spec = options.resolve()
            key = options.key(spec)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        check_fitted_key(directory / HEAD_DIR, key, "head")
        aligner = None
        if manifest["aligner"]:
            check_fitted_key(directory / ALIGNER_DIR, key, "aligner")
            aligner = load_aligner(directory / ALIGNER_DIR)
        return cls(options, key, str(store or default_store()), aligner, load_head(directory / HEAD_DIR), manifest,
                   spec)

    def vectors(self, texts: Sequence[str], *, progress: bool | None = None) -> np.ndarray:
        """The vectors of `texts` under the pipeline's key, encoding what the store lacks. `progress`: the encode's
        bar, on stderr (a bar on a terminal, a line every 30 s in a log); None shows it on long inputs when a person
        watches (`base.progress.watched_long`)."""
        with bars_on_stderr():
            return embed(texts, store=self.store, options=self.encode_options,
                         progress=watched_long(progress, len(texts)), spec=self.spec, keys=[self.key])

    @property
    def aligner_at_test(self) -> bool:
        return self.aligner is not None and self.aligner.aligns_target_at_test

    def predict_proba(self, texts: Sequence[str], *, use_aligner: bool | None = None,
                      progress: bool | None = None) -> np.ndarray:
        """`use_aligner` None: as the aligner prescribes (`Aligner.aligns_target_at_test`); `progress` as for
        `vectors`."""
        x = self.vectors(texts, progress=progress)
        if self.aligner is not None and (self.aligner_at_test if use_aligner is None else use_aligner):
            x = self.aligner.transform(x)
        return self.head.predict_proba(x)

    @property
    def classes_(self) -> list[str]:
        """The labels the head knows, in the column order of `predict_proba` (scikit-learn's name)."""
        return [str(c) for c in self.head.classes_]

    def predict(self, texts: Sequence[str], *, use_aligner: bool | None = None,
                progress: bool | None = None) -> list[str]:
        """The predicted label of each text, as a scikit-learn classifier's `predict` gives it."""
        proba = self.predict_proba(texts, use_aligner=use_aligner, progress=progress)
        return [self.classes_[i] for i in proba.argmax(axis=1)]

    def predict_records(self, texts: Sequence[str], *, use_aligner: bool | None = None,
                        progress: bool | None = None) -> list[dict]:
        """Text, label and per-class probabilities for each text: what `embedstore predict --json` prints."""
        return prediction_records(texts, self.classes_,
                                  self.predict_proba(texts, use_aligner=use_aligner, progress=progress))


def prediction_records(texts: Sequence[str], classes: Sequence[str], proba: np.ndarray) -> list[dict]:
    """One record per text; the one place a prediction's printed form is made (torch and ONNX pipelines)."""
    return [{"text": t, "label": classes[int(p.argmax())], "probabilities": dict(zip(classes, map(float, p)))}
            for t, p in zip(texts, proba)]
