"""The adapted encoder of a sweep cell (`adapt-lora`, `adapt-simcse`, `adapt-align`, `adapt-align+langalign`; the
runner is `experiments.run_adapted`), and the cell context that looks vectors up under it.

The adapted encoder is trained once per context and reused by every cell that shares it (task sizes, heads,
aligners): its directory under `<results>.adapt/` is named by a hash of everything that decides it (method,
options, seed, base model fingerprint, the texts it trains on), and `adapt` returns a finished run there as
is, or resumes an interrupted one. Its vectors go to a store of its own beside it (keyed by the adapted model's
fingerprint, like any store), so cells encoding for different adapted encoders never contend for the sweep
store's writer lock; the cached runners then run on that store unchanged.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from typing import Any

import numpy as np

from embedstore.base.atomic import write_text
from embedstore.store import Store


def adapted_context(ctx: Any, method: str, rows: list[dict], ids: np.ndarray,
                    needed: list[str]) -> tuple[Any, dict]:
    """Adapt the encoder by `method` on `rows` (JSON rows: text and label for lora, text for simcse, text and
    target for align; `ids` their text ids), encode `needed` with it into its own store, and return the cell's
    context on that store, with the adapted model and its key, and what the record should say about the adaptation.

    `ctx` is the cell's `experiments.Context` (not imported: experiments imports this module). Two cells of the
    same adapted encoder running at once: the second finds the adaptation's run directory locked and fails with
    that message; a rerun of the sweep retries it."""
    from embedstore.encoding.encode import encode
    from embedstore.text_training.adapt import AdaptRecipe, adapt, method_options
    from embedstore.data.tasks import Source

    cell, config = ctx.cell, ctx.config
    ctx.require_model_vectors("adapts")
    settings = {k: v for k, v in config.adapt.items() if k not in ("identity_weight", "size")}
    options = method_options(method, seed=cell.seed, **settings)
    recipe = AdaptRecipe(method, identity_weight=config.adapt.get("identity_weight", 0.0) if method == "align" else 0.0)
    digest = hashlib.sha256(json.dumps({"recipe": recipe.to_record(), "options": options.to_record(),
                                        "base": ctx.spec.fingerprint}, sort_keys=True, default=str).encode())
    digest.update(ids.tobytes())
    work = config.results.with_suffix(".adapt") / f"{method}-{digest.hexdigest()[:16]}"
    data_file = work / "data.jsonl"
    if not data_file.is_file():  # written atomically, so a present file is complete (and hashed by the run)
        write_text(data_file, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    data = (Source(data_file, "text", label="label") if method == "lora"
            else Source(data_file, "text", target="target" if method == "align" else None))
    adapted = adapt(recipe, data, work / "model", model=config.model, options=options)

    encoding = replace(config.encoding, model=str(adapted.out))
    spec = encoding.resolve()  # the adapted model, resolved once: its key is computed once and the context keeps both
    keys = encoding.keys(spec)
    store_path = work / "store.zarr"
    encode(list(dict.fromkeys(needed)), store=store_path, options=encoding, spec=spec, keys=keys)
    best = adapted.history["best_epoch"]
    info = {"method": method, "dir": str(work), "fingerprint": adapted.fingerprint,
            "base_fingerprint": adapted.base_fingerprint, "steps": adapted.steps, "rows": len(rows),
            "recipe": recipe.to_record(), "config": adapted.provenance["config"],
            "wall_time_s": adapted.provenance["wall_time_s"], "best_epoch": best,
            "val_before": adapted.history["epochs"][0], "val_best": adapted.history["epochs"][best]}
    return replace(ctx, store=Store.open(store_path), key=keys[0], spec=spec), info
