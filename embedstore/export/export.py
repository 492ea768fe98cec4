"""`embedstore export`: one pipeline directory → a checked sentence-transformers directory or ONNX graph."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable

from embedstore.base.atomic import atomic_dir, check_writable
from embedstore.base.errors import ConfigError
from embedstore.base.provenance import stamp

FORMATS = ("sentence-transformers", "onnx")
MANIFEST = "embedstore-export.json"
TOLERANCE = 1e-5


def export_pipeline(pipeline_dir: str | Path, out: str | Path, *, format: str,
                    model: str | os.PathLike[str] | None = None, tolerance: float = TOLERANCE,
                    metrics: str | os.PathLike[str] | None = None, progress: bool = False) -> dict:
    """Export the pipeline at `pipeline_dir` to `out` (new or empty); returns the export record (also written as
    `out/embedstore-export.json`): format, the pipeline's manifest, the largest vector and probability
    differences from the torch pipeline on the probe texts. `model` as in `Pipeline.load`; `metrics`: an
    `embedstore evaluate --out` JSON for the model card (README.md); `progress`: a line on stderr as each step
    (loading, writing, checking: each can take minutes on a CPU) starts."""
    from embedstore.base.progress import reporting_steps

    if format not in FORMATS:
        raise ConfigError(f"format: {format!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out: {out} exists and is not empty; choose a new or empty directory")
    check_writable(out)
    evaluation = _read_metrics(metrics) if metrics is not None else None
    with reporting_steps(progress) as step:
        return _export(pipeline_dir, out, format, model, tolerance, evaluation, step)


def _export(pipeline_dir: str | Path, out: Path, format: str, model: str | os.PathLike[str] | None,
            tolerance: float, evaluation: dict | None, step: Callable[[str], None]) -> dict:
    from embedstore.export.card import CARD_FILE, model_card, onnx_metadata
    from embedstore.export.graph import load_parts
    from embedstore.pipelines.pipeline import Pipeline

    t0 = time.perf_counter()
    step("loading the pipeline and its model, computing the reference outputs")
    pipe = Pipeline.load(pipeline_dir, model=model)
    parts, reference = load_parts(pipe)
    with atomic_dir(out) as tmp:
        step(f"writing the {format} export")
        if format == "onnx":
            from embedstore.export.onnx_graph import write_onnx

            check = write_onnx(parts, reference, tmp, tolerance)
        else:
            from embedstore.export.st import write_sentence_transformers

            check = write_sentence_transformers(parts, reference, tmp, tolerance)
        model_facts = check.pop("model", None)  # what the written model reported, for MTEB's metadata
        record = {"kind": "export", "format": format, "pipeline": str(pipeline_dir), **stamp(),
                  "aligner_in_model": parts.aligner is not None, "classes": parts.classes,
                  "check": {"texts": len(reference.texts), "tolerance": tolerance, "predictions_equal": True,
                            **check},
                  "pipeline_manifest": pipe.manifest, "seconds": round(time.perf_counter() - t0, 3)}
        (tmp / MANIFEST).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        (tmp / CARD_FILE).write_text(model_card(record, Path(pipeline_dir), evaluation), encoding="utf-8")
        if model_facts is not None:
            from embedstore.export.mteb_meta import META_FILE, mteb_model_meta

            (tmp / META_FILE).write_text(json.dumps(mteb_model_meta(record, Path(pipeline_dir), model_facts),
                                                    indent=2, ensure_ascii=False), encoding="utf-8")
        if format == "onnx":
            from embedstore.export.onnx_graph import GRAPH_FILE, seal

            onnx_metadata(tmp / GRAPH_FILE, record)
            seal(tmp)
    step("done")
    return {**record, "out": str(out)}


def _read_metrics(path: str | os.PathLike[str]) -> dict:
    """An `embedstore evaluate --out` record, read before any work (a wrong file fails at once)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"metrics: {path}: not a readable JSON record ({' '.join(str(e).split())})") from None
    if not isinstance(record, dict) or "primary" not in record or record["primary"] not in record:
        raise ConfigError(f"metrics: {path}: expected the JSON `embedstore evaluate --out` writes (with 'primary')")
    return record


def push_to_hub(out: str | Path, repo: str, *, revision: str | None = None, token: str | None = None,
                private: bool = False) -> str:
    """Upload an export directory to the Hugging Face hub as model repo `repo` (created if missing); returns the
    commit URL. The hub cannot be reached from every machine: its errors come back as one line."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        if revision is not None:
            api.create_branch(repo, branch=revision, repo_type="model", exist_ok=True)
        commit = api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="model", revision=revision,
                                   commit_message="embedstore export")
    except Exception as e:  # noqa: BLE001 - network, auth and hub errors all become one line
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"push to hub {repo!r}: {type(e).__name__}: {reason}; the export is kept in {out}") from None
    return str(getattr(commit, "commit_url", commit))
