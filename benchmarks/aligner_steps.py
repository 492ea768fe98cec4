"""How many optimizer steps the FC aligner needs on real pairs: the default recipe's step floor against lower ones.

    python benchmarks/aligner_steps.py [--pairs FILE] [--target ko] [--size 5000] [--floors 795 400 200]

Why: in `benchmarks/sweep.py` the aligner fits run at the machine's single-core fp32 rate, so only fewer steps
would make them cheaper; this prints what fewer steps cost in held-out retrieval (P@1 on 2,000 pairs the aligner
was not fitted on) and whether the collapse check flags the aligner. Needs the real model (e5-small, built
offline) and `../shared/data`.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory

from embedstore import api
from embedstore.estimators.training import RECIPES

PAIRS = Path(__file__).resolve().parents[2] / "shared/data/parallel/libreoffice_help.en-ko.tsv"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, default=PAIRS)
    ap.add_argument("--target", default="ko")
    ap.add_argument("--size", type=int, default=5000)
    ap.add_argument("--floors", type=int, nargs="+", default=[795, 400, 200])
    args = ap.parse_args()
    default = RECIPES["default"]
    with TemporaryDirectory() as tmp:
        for floor in args.floors:
            RECIPES[f"floor{floor}"] = {**default, "aligner": replace(default["aligner"], min_steps=floor)}
            started = time.perf_counter()
            record = api.train_aligner(args.pairs, target_column=args.target, arch="fc", size=args.size,
                                       recipe=f"floor{floor}", out=Path(tmp) / f"fc-{floor}", check_size=2000,
                                       progress=False)
            held_out = record["held_out"]
            print(json.dumps({"size": args.size, "step_floor": floor, "seconds": round(time.perf_counter() - started, 1),
                              "p1_aligned": held_out["p1"]["aligned"], "p1_raw": held_out["p1"]["raw"],
                              "collapsed": held_out["collapse"]["collapsed"]}), flush=True)


if __name__ == "__main__":
    main()
