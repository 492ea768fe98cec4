"""Encoding and store commands: `encode`, `models pull`, `store info`, `store verify`, `store merge`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from embedstore.api import ComputeOptions, EncodeOptions, StoreError

from .common import STORE, console, encoding_options, human_bytes, model_option, print_json, user_errors

models_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="Encoder models (the offline default is built locally).")
cache_app = typer.Typer(no_args_is_help=True, add_completion=False,
                        help="See and prune the cache (models, ONNX graphs, stores): $EMBEDSTORE_CACHE or ./cache.")
store_app = typer.Typer(no_args_is_help=True, add_completion=False, help="Inspect, verify, repair and merge vector stores.")


@user_errors
@encoding_options(layers="many")
def encode(
    files: list[Path] = typer.Argument(..., help="TSV (no quoting), CSV, JSONL, .txt (one text per line), Parquet or "
                                      "Arrow files, or datasets save_to_disk directories."),
    column: list[str] = typer.Option([], "--text-column", "--column", "-c", help="Text column (default: 'text'); repeat to encode "
                                     "several columns (e.g. -c en -c ko) in one pass."),
    pair_column: Optional[str] = typer.Option(None, "--pair-column", help="Second text of a pair (NLI hypothesis)."),
    where: list[str] = typer.Option([], "--where", help="Row filter COLUMN=V1,V2 (repeatable), e.g. fold=0,1,2."),
    store: Optional[str] = STORE,
    batch_size: int = typer.Option(ComputeOptions.batch_size, help="At most this many texts per forward pass."),
    batch_tokens: int = typer.Option(ComputeOptions.batch_tokens,
                                     help="Padded tokens per forward pass: batches of length-sorted texts are cut "
                                          "by this budget (and --batch-size)."),
    backend: str = typer.Option(ComputeOptions.backend, help="auto (ONNX Runtime on CPU, and on CUDA when "
                                "onnxruntime-gpu is installed, else PyTorch), onnx or torch; fp32 ONNX vectors "
                                "equal PyTorch's within 1e-5 and share their store key."),
    device: str = typer.Option(ComputeOptions.device, help="auto (CUDA when present), cpu, cuda, cuda:N."),
    chunk_rows: int = typer.Option(ComputeOptions.chunk_rows,
                                   help="Rows per stored chunk, and per commit (for new keys)."),
    distributed: Optional[bool] = typer.Option(
        None, "--distributed/--no-distributed",
        help="Encode as one rank of a torch.distributed job (ranks write disjoint chunks of one .zarr store) "
             "(default: on when WORLD_SIZE > 1, as under torchrun)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    *, encoding: EncodeOptions,
) -> None:
    """Encode texts into the store; what the store already holds is skipped."""
    from embedstore.api import encode_files, settings_record

    compute = ComputeOptions(batch_size=batch_size, batch_tokens=batch_tokens, device=device, chunk_rows=chunk_rows,
                             backend=backend)
    report = encode_files(files, columns=column or None, pair_column=pair_column, where=where, store=store,
                          encoding=encoding, compute=compute, progress=not as_json, distributed=distributed)
    if report.rank != 0:  # every rank has the job's totals; print them once
        return
    if as_json:
        print_json({**report.to_dict(), "settings": settings_record(store)})
        return
    rate = f", {report.texts_per_second:,.1f} texts/s" if report.encoded else ""
    ranks = f" on {report.world_size} ranks" if report.world_size > 1 else ""
    console.print(f"{report.store}: {report.texts:,} texts, {report.unique:,} unique, {report.present:,} already "
                  f"stored, {report.encoded:,} encoded{ranks} in {report.seconds:.1f} s{rate}")
    for key in report.keys:
        console.print(f"  key: {key.model} pooling={key.pooling} layer={key.layer} "
                      f"max_length={key.max_length} prefix={key.prefix!r} dtype={key.dtype}")
    if report.provenance:
        onnx = report.provenance.get("onnx")
        check = f" (graph checked: max |diff| to PyTorch {onnx['max_abs_diff']:.1e}, min cosine " \
                f"{onnx['min_cosine']:.5f})" if onnx else ""
        console.print(f"  backend: {report.provenance['backend']} on {report.provenance['device']}{check}")


@models_app.command("pull")
@user_errors
def models_pull(
    name: Optional[str] = typer.Argument(None, help="Built-in name (built offline) or a hub name (default: the "
                                         "project's model: EMBEDSTORE_MODEL, embedstore.toml, else "
                                         f"{EncodeOptions.model})."),
    force: bool = typer.Option(False, help="Rebuild even if present."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Build (or download) a model into cache/models."""
    from embedstore.api import pull_model

    name = model_option(name)
    result = pull_model(name, force=force)
    if as_json:
        return print_json({"name": name, "path": str(result.path), "size_bytes": result.size_bytes,
                           "fetched": result.fetched, "seconds": result.seconds, "fingerprint": result.fingerprint})
    action = f"built in {result.seconds:.1f} s" if result.fetched else "already present"
    console.print(f"{name}: {result.path} ({human_bytes(result.size_bytes)}, {action}), "
                  f"fingerprint {result.fingerprint}", highlight=False)


@store_app.command("info")
@user_errors
def store_info(
    path: str = typer.Argument(..., help="A .zarr directory, .h5 file or object-store URL (s3://...)."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Keys, rows, dimension and size on disk of a store."""
    from embedstore.api import store_info

    info = store_info(path)
    if as_json:
        print_json(info)
        return
    columns = ("model", "fingerprint", "pooling", "layer", "max_len", "prefix", "dtype", "rows", "dim")
    rows = [(k["model"], k["fingerprint"][:12], k["pooling"], str(k["layer"]), str(k["max_length"]),
             repr(k["prefix"]), k["dtype"], f"{k['rows']:,}", str(k["dim"])) for k in info["keys"]]
    if not console.is_terminal:  # piped: whole values, one key per line (a table would cut model names to fit)
        typer.echo(f"{info['path']}\t{info['backend']}\t{human_bytes(info['size_bytes'])}")
        for row in [columns, *rows]:
            typer.echo("\t".join(row))
        return
    table = Table(title=f"{info['path']} ({info['backend']}, {human_bytes(info['size_bytes'])})")
    for col in columns:  # fold, never truncate: the int8 and fp32 keys differ in the model name's end
        table.add_column(col, justify="right" if col in ("layer", "max_len", "rows", "dim") else "left",
                         overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@store_app.command("verify")
@user_errors
def store_verify(
    path: str = typer.Argument(..., help="A .zarr directory, .h5 file or object-store URL (s3://...)."),
    repair: bool = typer.Option(False, "--repair", help="Drop the damaged rows from the store, so that the next "
                                                         "`encode` of their texts recomputes them."),
    as_json: bool = typer.Option(False, "--json", help="Print what was found (and repaired) as JSON."),
) -> None:
    """Read every committed chunk of every key (ids, vectors and row digests) and check every row against its
    digest; print what is missing or damaged and exit 1 if anything is (after --repair, 0: damaged rows are
    dropped, digests damaged alone are rebuilt)."""
    from embedstore.api import damaged_rows, verify_store

    if repair:
        done = verify_store(path, repair=True)
        if as_json:
            return print_json({"path": path, "dropped": [d.describe() for d in done.dropped],
                               "dropped_rows": done.dropped_rows, "rebuilt": [d.describe() for d in done.rebuilt],
                               "rebuilt_rows": done.rebuilt_rows})
        for d in done.dropped:
            console.print(f"damaged: {d.describe()}", highlight=False, soft_wrap=True)
        for d in done.rebuilt:
            console.print(f"rebuilt: {d.describe()}", highlight=False, soft_wrap=True)
        if done.rebuilt:
            console.print(f"{path}: rebuilt the row digests of {done.rebuilt_rows:,} rows from their intact ids "
                          "and vectors", highlight=False, soft_wrap=True)
        if done.dropped or not done.rebuilt:
            console.print(f"{path}: dropped {done.dropped_rows:,} rows; `embedstore encode` on their texts "
                          "recomputes them" if done.dropped else f"{path}: every committed row reads back intact",
                          highlight=False, soft_wrap=True)
        return
    damage = verify_store(path)
    if as_json:
        print_json({"path": path, "damaged": [d.describe() for d in damage], "damaged_rows": damaged_rows(damage)})
    for d in damage if not as_json else ():
        console.print(f"damaged: {d.describe()}", highlight=False, soft_wrap=True)
    if not damage and as_json:
        return
    if not damage:
        console.print(f"{path}: every committed row reads back intact", highlight=False, soft_wrap=True)
        return
    raise StoreError(f"{path}: {damaged_rows(damage):,} committed rows damaged; `embedstore store verify {path} "
                     "--repair` drops them")


@store_app.command("merge")
@user_errors
def store_merge(
    inputs: list[str] = typer.Argument(..., help="Stores to merge (.zarr, .h5 or s3://... URLs); the first holding a text wins."),
    out: str = typer.Option(..., "--out", "-o", help="The merged store to create (.zarr, .h5 or an s3://... URL)."),
    force: bool = typer.Option(False, help="Replace --out if it exists."),
    tolerance: float = typer.Option(1e-5, help="Largest accepted difference between two stores' vectors of one "
                                                "text under one key; beyond it the merge stops."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Merge stores (e.g. encoded on machines without a shared filesystem): identical keys are combined and
    deduplicated by text, other keys are copied side by side. One input converts between .zarr and .h5."""
    from embedstore.api import merge_stores

    report = merge_stores(inputs, out, force=force, tolerance=tolerance)
    if as_json:
        print_json(report.to_dict())
        return
    console.print(f"{report.out}: {len(report.keys)} keys from {len(report.inputs)} stores in {report.seconds:.1f} s")
    for k in report.keys:
        taken = ", ".join(f"{n:,} from {path}" for path, n in k.rows_from.items())
        console.print(f"  {k.group}: {k.rows:,} rows ({taken}; {k.duplicates:,} duplicates dropped, "
                      f"max difference {k.max_difference:.1e})")


@cache_app.command("list")
@user_errors
def cache_list(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Every entry of the cache with its kind and size, largest first."""
    from embedstore.api import list_cache

    entries = list_cache()
    if as_json:
        return print_json([e.to_dict() for e in entries])
    for e in entries:
        typer.echo(f"{human_bytes(e.size_bytes):>10}  {e.kind:<10}  {e.path}")
    typer.echo(f"{human_bytes(sum(e.size_bytes for e in entries)):>10}  total")


@cache_app.command("prune")
@user_errors
def cache_prune(
    kind: list[str] = typer.Option(["onnx"], "--kind", help="What to remove: onnx (exported graphs) and/or models "
                                   "(built or downloaded models); both rebuild on next use. Stores are never pruned."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Remove cached entries that rebuild on next use (by default the ONNX graphs)."""
    from embedstore.api import prune_cache

    removed = prune_cache(kind, dry_run=dry_run)
    if as_json:
        return print_json({"dry_run": dry_run, "removed": [e.to_dict() for e in removed],
                           "freed_bytes": sum(e.size_bytes for e in removed)})
    for e in removed:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {human_bytes(e.size_bytes):>10}  {e.path}")
    typer.echo(f"{'would free' if dry_run else 'freed'} {human_bytes(sum(e.size_bytes for e in removed))}")
