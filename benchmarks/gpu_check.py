"""The GPU path, checked in one command (issue 31): every piece of embedstore that runs on CUDA, run once.

    python benchmarks/gpu_check.py [--model NAME_OR_DIR] [--rows 512] [--out DIR]

On a machine with a CUDA GPU it runs, each as the user would (a subprocess of the CLI), and prints PASS/FAIL per
item with its wall time and figures:

1. encode fp32 on CUDA through PyTorch, and through ONNX Runtime's CUDA provider (onnxruntime-gpu; without it the
   item FAILs naming the package); the two stores' vectors must agree within 1e-4 (fp32 kernels differ a little);
2. encode `--precision fp16` and `--precision bf16` (PyTorch autocast) and `--precision onnx-fp16` (ONNX Runtime's
   fp16 graph on its CUDA provider): the fidelity check's min cosine and P@1 against fp32 are printed, and the item
   FAILs if the precision was refused (below the bound, or no CUDA provider). bf16 has no ONNX Runtime path
   (`encoding.options.PRECISION_ENGINES`);
3. a 1-GPU `torchrun` encode (nccl): same vectors as item 1's PyTorch store within 1e-5;
4. a `finetune` end-to-end cell (LangAlign behind a Procrustes aligner, 1 epoch) and 5. an `adapt align` run (1
   epoch), both with `--device cuda`, whose records must say they ran on CUDA.

Budget: at most 8 minutes on one GPU with the default e5-small and 512 rows (most of it model loading; each item
is a fresh process). Without a GPU it prints one line and exits 0. `run_checks(device="cpu", ...)` runs the same
items on CPU (gloo for torchrun, ONNX Runtime's CPU provider, bf16 autocast on CPU): that is what the heavy test
tier runs, so the script cannot rot between GPU runs (fp16 autocast is left out there: a GPU path; onnx-fp16 runs
on the CPU provider, which casts around the operators it has no fp16 kernel for).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

BUDGET_SECONDS = 8 * 60
SAMPLE = Path(str(files("embedstore") / "data" / "libreoffice_help.en-ko.sample.tsv"))


@dataclass
class Item:
    name: str
    ok: bool
    seconds: float
    detail: str = ""
    figures: dict = field(default_factory=dict)

    def line(self) -> str:
        figures = "  ".join(f"{k} {v}" for k, v in self.figures.items())
        return f"{'PASS' if self.ok else 'FAIL'}  {self.name:<34} {self.seconds:7.1f} s  {figures}  {self.detail}".rstrip()


def _run(args: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=env)
    return done, time.perf_counter() - t0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "embedstore", *map(str, args)]


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _json(done: subprocess.CompletedProcess) -> dict:
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {}


def _vectors(store: Path, texts: list[str], model_suffix: str = ""):
    from embedstore.store import Store

    st = Store.open(store)
    key = next(k for k in st.keys() if k.model.endswith(model_suffix) and ("+" in k.model) == bool(model_suffix))
    return st.get(key, texts)


def sample_files(rows: int, out: Path) -> dict[str, Path]:
    """The bundled sample's first single-app rows as task (en, label) / test (ko, label) / pair (en, ko) files."""
    from embedstore.data.texts import read_table

    table = read_table(SAMPLE, ["en", "ko", "apps"])
    keep = [i for i, app in enumerate(table["apps"]) if "," not in app][:rows]
    lines = ["en\tko\tlabel"] + [f"{table['en'][i]}\t{table['ko'][i]}\t{table['apps'][i]}" for i in keep]
    path = out / "sample.tsv"
    path.write_text("\n".join(line.replace("\r", " ") for line in lines) + "\n", encoding="utf-8")
    return {"rows": path, "texts": [table["en"][i] for i in keep]}


def run_checks(device: str, model: str, rows: int, out: Path) -> list[Item]:
    """Every item on `device` ("cuda" or "cpu"), in `out` (a fresh directory); returns their results."""
    import numpy as np

    env = {**os.environ, "EMBEDSTORE_CACHE": str(out / "cache"), "TOKENIZERS_PARALLELISM": "false"}
    data = sample_files(rows, out)
    texts = [t.strip() for t in data["texts"]]
    items: list[Item] = []
    encode = ("encode", data["rows"], "--column", "en", "--model", model, "--device", device, "--json")

    stores = {}
    for name, extra in (("torch", ("--backend", "torch")), ("onnx", ("--backend", "onnx"))):
        stores[name] = out / f"{name}.zarr"
        done, seconds = _run(_cli(*encode, "--store", stores[name], *extra), env)
        report = _json(done)
        ok = done.returncode == 0 and report.get("encoded") == len(set(texts))
        provider_ok = True
        if ok and name == "onnx" and device == "cuda":
            import onnxruntime

            provider_ok = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        figures = {"rows": report.get("encoded"), "device": report.get("provenance", {}).get("device")}
        detail = _last_line(done.stderr) if done.returncode else ("" if provider_ok else
                                                                 "no CUDA provider: pip install onnxruntime-gpu")
        items.append(Item(f"encode fp32 ({name})", ok and provider_ok, seconds, detail, figures))
    if all(i.ok for i in items):
        diff = float(np.abs(_vectors(stores["torch"], texts) - _vectors(stores["onnx"], texts)).max())
        items.append(Item("fp32 torch = onnx", diff <= 1e-4, 0.0, "", {"max |diff|": f"{diff:.1e}"}))

    for precision, engine in (("fp16", "autocast"), ("bf16", "autocast"), ("onnx-fp16", "ONNX Runtime")):
        if device == "cpu" and precision == "fp16":
            continue  # fp16 autocast is a GPU path; on CPU only bf16 is worth checking
        done, seconds = _run(_cli(*encode, "--store", stores["torch"], "--precision", precision), env)
        check = _json(done).get("provenance", {}).get("precision_check", {})
        items.append(Item(f"encode {precision} ({engine})", done.returncode == 0 and bool(check), seconds,
                          _last_line(done.stderr) if done.returncode else "",
                          {"min cosine": check.get("min_cosine"), "P@1": check.get("p_at_1")}))

    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc-per-node", "1",
                "-m", "embedstore", *map(str, encode), "--store", str(out / "ranks.zarr"), "--backend", "torch",
                "--distributed"]
    done, seconds = _run(torchrun, env)
    ok = done.returncode == 0
    figures = {}
    if ok:
        diff = float(np.abs(_vectors(out / "ranks.zarr", texts) - _vectors(stores["torch"], texts)).max())
        ok, figures = diff <= 1e-5, {"max |diff| vs one process": f"{diff:.1e}",
                                     "backend": "nccl" if device == "cuda" else "gloo"}
    items.append(Item("torchrun 1 rank encode", ok, seconds, _last_line(done.stderr) if done.returncode else "",
                      figures))

    aligner = out / "aligner"
    done, seconds = _run(_cli("train-aligner", "--pairs", data["rows"], "--target-column", "ko", "--arch",
                              "procrustes", "--model", model, "--store", stores["torch"], "--out", aligner), env)
    if done.returncode:
        items.append(Item("finetune e2e cell", False, seconds, f"train-aligner: {_last_line(done.stderr)}"))
    else:
        done, seconds = _run(_cli("finetune", "--train", data["rows"], "--test", data["rows"], "--aligner", aligner,
                                  "--text-column", "en", "--test-text-column", "ko", "--label-column", "label",
                                  "--model", model, "--epochs", "1", "--max-length", "64", "--device", device,
                                  "--out", out / "finetune", "--json"), env)
        result = _json(done)
        ran_on = json.dumps(result).count(device)  # the record names the device it trained on
        items.append(Item("finetune e2e cell", done.returncode == 0 and ran_on > 0, seconds,
                          _last_line(done.stderr) if done.returncode else "",
                          {"accuracy": result.get("metrics", {}).get("accuracy")}))

    done, seconds = _run(_cli("adapt", "align", "--data", data["rows"], "--text-column", "en", "--target-column", "ko",
                              "--model", model, "--epochs", "1", "--max-length", "64", "--device", device,
                              "--out", out / "adapted", "--json"), env)
    items.append(Item("adapt align", done.returncode == 0 and device in done.stdout, seconds,
                      _last_line(done.stderr) if done.returncode else ""))
    return items


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="Model name or directory (default: the default e5-small).")
    parser.add_argument("--rows", type=int, default=512, help="Sample rows per item.")
    parser.add_argument("--out", type=Path, default=None, help="Work directory (default: a temporary one).")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); nothing to check")
        return 0
    from embedstore.encoding.models import DEFAULT_MODEL

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        print(f"gpu_check on {torch.cuda.get_device_name(0)} (torch {torch.__version__}), {args.rows} rows")
        items = run_checks("cuda", args.model or DEFAULT_MODEL, args.rows, out)
    for item in items:
        print(item.line())
    total = time.perf_counter() - t0
    within = total <= BUDGET_SECONDS
    print(f"{'PASS' if within else 'FAIL'}  whole check {total:.0f} s (target <= {BUDGET_SECONDS} s)")
    return 0 if within and all(item.ok for item in items) else 1


if __name__ == "__main__":
    sys.exit(main())
