"""MTEB's model metadata beside a sentence-transformers export (`mteb_model_meta.json`).

Why: an exported pipeline is a sentence-transformers model a user may run through MTEB or submit to its
leaderboard, and MTEB describes every model by a `ModelMeta` (mteb 2.x, `mteb/models/model_meta.py`; pydantic with
`extra="forbid"`, so the file holds exactly its fields and `mteb.ModelMeta(**json.load(f))` accepts it). The facts
come from the export itself (dimension, parameters, similarity of the model as loaded back) and the pipeline's
manifest (encoder, max length, prompt, the files it was fitted on); nothing is guessed: what is not known
(license, release on a hub, public training code) stays null.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any, Mapping

META_FILE = "mteb_model_meta.json"

#: ISO 639-1 codes (as pair-file columns are usually named) → MTEB's ISO 639-3 + ISO 15924 script codes.
LANGUAGE_SCRIPTS = {"en": "eng-Latn", "ko": "kor-Hang", "ja": "jpn-Jpan", "zh": "zho-Hans", "zh-tw": "zho-Hant",
                    "de": "deu-Latn", "fr": "fra-Latn", "es": "spa-Latn", "it": "ita-Latn", "pt": "por-Latn",
                    "ru": "rus-Cyrl", "ar": "ara-Arab", "hi": "hin-Deva", "th": "tha-Thai", "vi": "vie-Latn",
                    "id": "ind-Latn", "tr": "tur-Latn", "nl": "nld-Latn", "pl": "pol-Latn", "sv": "swe-Latn"}


def _languages(aligner_provenance: Mapping[str, Any]) -> list[str]:
    """English (the task data's language) and the pair file's target column when it names a known language."""
    pairs = aligner_provenance.get("pairs") or {}
    codes = ["en", str(pairs.get("target") or "").lower()]
    return list(dict.fromkeys(LANGUAGE_SCRIPTS[c] for c in codes if c in LANGUAGE_SCRIPTS))


def _name(pipeline: str) -> str:
    """MTEB wants 'organization/model_name'; a local export has no organization until it is pushed."""
    return f"local/{re.sub(r'[^A-Za-z0-9._-]+', '-', Path(pipeline).name) or 'pipeline'}"


def mteb_model_meta(record: Mapping[str, Any], pipeline_dir: Path, model: Mapping[str, Any]) -> dict[str, Any]:
    """The ModelMeta fields of an export: `record` is `export_pipeline`'s record, `model` what the written
    sentence-transformers model reported when loaded back (embed_dim, n_parameters, similarity_fn_name)."""
    from embedstore.estimators.artifacts import read_config

    manifest = record["pipeline_manifest"]
    encoding, train = manifest.get("encoding", {}), manifest.get("train", {})
    aligner = read_config(pipeline_dir / manifest["aligner"]).get("provenance") or {} \
        if manifest.get("aligner") else {}
    files = [Path(str(f["path"])).name for f in (train, aligner.get("pairs") or {}) if f.get("path")]
    return {
        "loader": None, "loader_kwargs": {},
        "name": _name(str(record.get("pipeline", "pipeline"))),
        "revision": None,  # a hub commit, known once pushed
        "release_date": datetime.date.today().isoformat(),
        "languages": _languages(aligner) or None,
        "n_parameters": int(model["n_parameters"]),
        "memory_usage_mb": round(model["n_parameters"] * 4 / 2**20, 1),  # fp32 weights
        "max_tokens": encoding.get("max_length"),
        "embed_dim": int(model["embed_dim"]),
        "license": None, "open_weights": True,
        "public_training_code": None, "public_training_data": None,
        "framework": ["Sentence Transformers", "PyTorch"],
        "reference": None,
        "similarity_fn_name": model["similarity_fn_name"],
        "use_instructions": bool(record["check"].get("prompt", encoding.get("prefix"))),
        "training_datasets": sorted(dict.fromkeys(files)) or None,
        "adapted_from": encoding.get("model"),
        "superseded_by": None, "modalities": ["text"], "is_cross_encoder": False, "citation": None,
        "contacts": None,
    }
