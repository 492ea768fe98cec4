"""`embedstore export`: one pipeline directory → a checked sentence-transformers directory or ONNX graph."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from embedstore.base.atomic import atomic_dir, check_writable
from embedstore.base.errors import ConfigError
from embedstore.base.provenance import stamp

FORMATS = ("sentence-transformers", "onnx")
MANIFEST = "embedstore-export.json"
TOLERANCE = 1e-5


def export_pipeline(pipeline_dir: str | Path, out: str | Path, *, format: str,
                    model: str | os.PathLike[str] | None = None, tolerance: float = TOLERANCE) -> dict:
    """Export the pipeline at `pipeline_dir` to `out` (new or empty); returns the export record (also written as
    `out/embedstore-export.json`): format, the pipeline's manifest, the largest vector and probability
    differences from the torch pipeline on the probe texts. `model` as in `Pipeline.load`."""
    from embedstore.export.graph import load_parts
    from embedstore.pipelines.pipeline import Pipeline

    if format not in FORMATS:
        raise ConfigError(f"format: {format!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"out: {out} exists and is not empty; choose a new or empty directory")
    check_writable(out)
    t0 = time.perf_counter()
    pipe = Pipeline.load(pipeline_dir, model=model)
    parts, reference = load_parts(pipe)
    with atomic_dir(out) as tmp:
        if format == "onnx":
            from embedstore.export.onnx_graph import write_onnx

            check = write_onnx(parts, reference, tmp, tolerance)
        else:
            from embedstore.export.st import write_sentence_transformers

            check = write_sentence_transformers(parts, reference, tmp, tolerance)
        record = {"kind": "export", "format": format, "pipeline": str(pipeline_dir), **stamp(),
                  "aligner_in_model": parts.aligner is not None, "classes": parts.classes,
                  "check": {"texts": len(reference.texts), "tolerance": tolerance, "predictions_equal": True,
                            **check},
                  "pipeline_manifest": pipe.manifest, "seconds": round(time.perf_counter() - t0, 3)}
        (tmp / MANIFEST).write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
    return {**record, "out": str(out)}
