"""A trained LangAlign pipeline on disk: which encoder and store key, the aligner (if any) and the head.

One directory that loads with one call and answers on new target-language text: `Pipeline.load(dir)`, then
`predict(texts)` encodes what the store lacks and runs aligner → head. Everything is JSON + safetensors.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from embedstore.estimators.aligners import Aligner, load_aligner
from embedstore.encoding.options import EncodeOptions
from embedstore.encoding.encode import embed
from embedstore.base.errors import ConfigError
from embedstore.estimators.heads import Head, load_head

MANIFEST = "pipeline.json"
PAIR_IDS = "pair_ids.safetensors"


def save_pair_ids(directory: Path, source_ids: np.ndarray, target_ids: np.ndarray) -> None:
    """An aligner remembers the hashes of its training pairs, so task rows can be kept disjoint later."""
    save_file({"source": source_ids, "target": target_ids}, str(directory / PAIR_IDS))


def load_pair_ids(directory: Path) -> np.ndarray:
    path = directory / PAIR_IDS
    if not path.is_file():
        return np.zeros((0, 16), np.uint8)
    ids = load_file(str(path))
    return np.concatenate([ids["source"], ids["target"]])


@dataclass
class Pipeline:
    encode_options: EncodeOptions
    store: str
    aligner: Aligner | None
    head: Head
    manifest: dict

    @classmethod
    def load(cls, directory: str | Path) -> "Pipeline":
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise ConfigError(f"{directory}: not a pipeline directory (no {MANIFEST}); make one with `embedstore train-head`")
        manifest = json.loads(path.read_text())
        enc = manifest["encode"]
        options = EncodeOptions(model=enc["model"], pooling=enc["pooling"], layers=(enc["layer"],),
                                max_length=enc["max_length"], prefix=enc["prefix"], dtype=enc["dtype"])
        aligner = load_aligner(directory / "aligner") if manifest.get("aligner") else None
        return cls(options, manifest["store"], aligner, load_head(directory / "head"), manifest)

    def vectors(self, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return embed(texts, store=self.store, options=self.encode_options, progress=progress)

    @property
    def aligner_at_test(self) -> bool:
        return self.aligner is not None and self.aligner.aligns_target_at_test

    def predict_proba(self, texts: Sequence[str], *, use_aligner: bool | None = None) -> np.ndarray:
        """`use_aligner` None: as the aligner prescribes (`Aligner.aligns_target_at_test`)."""
        x = self.vectors(texts)
        if self.aligner is not None and (self.aligner_at_test if use_aligner is None else use_aligner):
            x = self.aligner.transform(x)
        return self.head.predict_proba(x)

    def predict(self, texts: Sequence[str], *, use_aligner: bool | None = None) -> list[dict]:
        """Label and per-class probabilities for each text."""
        proba = self.predict_proba(texts, use_aligner=use_aligner)
        classes = [str(c) for c in self.head.classes_]
        return [{"text": t, "label": classes[int(p.argmax())], "probabilities": dict(zip(classes, map(float, p)))}
                for t, p in zip(texts, proba)]
