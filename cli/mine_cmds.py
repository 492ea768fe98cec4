"""`embedstore mine`: translation pairs proposed from two unpaired files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from embedstore.api import ConfigError, EncodeOptions

from .common import STORE, compute_options, console, encoding_options, print_json, user_errors


@user_errors
@encoding_options()
@compute_options()
def mine(
    source_file: Path = typer.Argument(..., help="Texts of the source language (TSV, CSV, JSONL or .txt)."),
    target_file: Path = typer.Argument(..., help="Texts of the target language, unrelated rows."),
    source_column: str = typer.Option("en", "--source-column", help="Text column of SOURCE_FILE (.txt: text)."),
    target_column: str = typer.Option("ko", "--target-column", help="Text column of TARGET_FILE (.txt: text)."),
    names: Optional[str] = typer.Option(None, "--names", help="The output's two text columns, SOURCE,TARGET "
                                        "(default: the two --*-column names)."),
    out: Path = typer.Option(..., "--out", "-o", help="Mined pairs with their margins: .tsv or .jsonl (usable as a "
                             "sweep's or train-aligner's pair file)."),
    k: int = typer.Option(4, "--k", help="Neighbours in the ratio margin (LASER: 4)."),
    min_margin: Optional[float] = typer.Option(None, "--min-margin", help="Keep pairs with at least this margin "
                                               "(LASER's bitext filtering used about 1.06); default: every mutual pair."),
    where: list[str] = typer.Option([], "--where", help="Row filter COLUMN=V1,V2 on both files (repeatable)."),
    store: Optional[str] = STORE,
    as_json: bool = typer.Option(False, "--json"), *, encoding: EncodeOptions,
) -> None:
    """Mine translation pairs between two unpaired files: mutual best candidates by ratio margin (LASER)."""
    from embedstore.api import mine as run

    pair = tuple(n.strip() for n in names.split(",")) if names is not None else None
    if pair is not None and len(pair) != 2:
        raise ConfigError(f"--names: {names!r}; expected two column names, SOURCE,TARGET")
    record = run(source_file, target_file, out=out, source_column=source_column, target_column=target_column,
                 names=pair, k=k, min_margin=min_margin, where=where, store=store, encoding=encoding,
                 progress=not as_json)
    if as_json:
        return print_json(record)
    sizes = record["sizes"]
    console.print(f"{record['pairs']:,} pairs mined from {sizes['source_texts']:,} × {sizes['target_texts']:,} "
                  f"texts in {record['seconds']:.1f} s → {out}", markup=False, highlight=False)
