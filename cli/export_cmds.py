"""`embedstore export`: a trained pipeline as a sentence-transformers directory or one ONNX graph."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedstore.api import EXPORT_FORMATS, EXPORT_TOLERANCE

from .common import PIPELINE_MODEL, console, print_json, user_errors


@user_errors
def export(
    out: Path = typer.Argument(..., help="Directory to create (new or empty)."),
    pipeline: Path = typer.Option(..., "--pipeline", "-p", help="Pipeline directory from train-head."),
    format: str = typer.Option(..., "--format", help=" | ".join(EXPORT_FORMATS) + "."),
    model: Optional[str] = PIPELINE_MODEL,
    tolerance: float = typer.Option(EXPORT_TOLERANCE, help="Largest accepted difference between the export's vectors "
                                                    "(and probabilities) and the torch pipeline's."),
    metrics: Optional[Path] = typer.Option(None, "--metrics", help="An `embedstore evaluate --out` JSON: its figures "
                                           "go into the model card (README.md)."),
    push_to_hub: Optional[str] = typer.Option(None, "--push-to-hub", help="Then upload the export to this Hugging "
                                              "Face model repo (ORG/NAME; created if missing)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="--push-to-hub: the branch to upload to."),
    token: Optional[str] = typer.Option(None, "--token", help="--push-to-hub: a hub token (default: HF_TOKEN or "
                                        "the saved login)."),
    as_json: bool = typer.Option(False, "--json", help="Print the export record as JSON."),
) -> None:
    """Export a pipeline; the export is run on probe texts and checked against the torch pipeline first."""
    from embedstore.api import export_pipeline

    record = export_pipeline(pipeline, out, format=format, model=model, tolerance=tolerance, metrics=metrics,
                             push_to_hub=push_to_hub, revision=revision, token=token, progress=True)
    if as_json:
        return print_json(record)
    check = record["check"]
    aligner = " + aligner" if record["aligner_in_model"] else ""
    console.print(f"{format} export{aligner} → {out}: on {check['texts']} probe texts, vectors within "
                  f"{check['max_vector_difference']:.1e} and the same predictions as the torch pipeline",
                  highlight=False, soft_wrap=True)
    if push_to_hub:
        console.print(f"pushed to {push_to_hub}: {record['pushed']}", highlight=False, soft_wrap=True)
