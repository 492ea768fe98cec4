"""The vector store at millions of rows, against a plain numpy layout measured in the same run.

    python benchmarks/store.py                      # 1M and 10M rows (10M: ~16 GB of disk, minutes)
    python benchmarks/store.py --rows 100000 1000000 --repeats 1    # a quick check
    python benchmarks/store.py --quick              # a smoke run: 100k and 200k rows, 2 repeats

For each size, a synthetic key of N rows x 384 float16 (random ids, random vectors) is built twice: as an
embedstore zarr key (the layout `embedstore encode` writes: 1,024-row chunks, sharded, crc32c) and as the numpy
anchor (the vectors in a `.npy`, the ids sorted as 16-byte strings with the permutation to their rows). Then,
on each: look up 100k ids (`contains`), gather the float32 vectors of 10k random ids, gather a third of the
rows (random ids, random order), and `store info`. Each gather starts from ids, so both sides look them up.

How it is measured, and why:
- Every operation runs in a fresh Python process: that is how a user meets the store (one `embed` call, one
  command), so nothing cached in memory by an earlier operation helps, and each process's peak memory belongs to
  one operation alone.
- The page cache is set, not inherited: each read operation runs once per state of `--cache` (default both), its
  process putting its side's files in the page cache (warm: read through) or out of it (cold: fsync, then
  POSIX_FADV_DONTNEED) just before the timed part (`set_cache`), and the table's `cache` column measures what
  the state then was. Beside the seconds, each side's CPU seconds (user + system) and MiB read from the disk
  (/proc/self/io `read_bytes`) during the operation (each child's JSON line has its page faults too): counts
  that say whether a slower repeat computed more, spent it in the kernel (faulting in fresh pages, reclaiming
  memory) or waited on the disk. Why the counts: with every byte in the page cache, two repeats of the 1M-row
  gather of a third still took 120k and 37k minor page faults on the store's side (77k and 10k on the anchor's)
  and 1.0 and 0.3 s of system CPU. numpy asks Linux for transparent huge pages for large arrays, and whether the
  kernel finds them (or compacts memory to make them) depends on how fragmented memory is after everything else
  the machine did; with `--no-huge-pages` the counts repeat exactly (store 822k, anchor 314-318k: the store's
  gather faulted in ~3.1 GiB of fresh pages for a 0.5 GiB result, the anchor's ~1.2 GiB; 283k since dense reads
  take only their rows, docs/performance.md).
- Seconds: wall time of the operation inside that process, after imports and after loading its input; the
  median of `--repeats` processes. The store's and the anchor's processes alternate (which side goes
  first swaps at each repeat), so a drift of the machine, or a page cache one side's run warmed, touches both.
- Peak memory: the peak resident set size (Linux VmHWM, reset through /proc/self/clear_refs just before the
  operation) minus the resident size then. RSS rather than tracemalloc because RSS is what runs a 24 GiB
  machine out of memory, and it also sees what numpy/zarr allocate in C and the pages a memory map touches
  (which tracemalloc misses, and which count against the anchor's memmapped reads).
- Targets (issue 16): each operation within 1.5x of the anchor's time and peak memory; operations under
  FLOOR_SECONDS and memory under FLOOR_MIB count as those floors (below them a ratio is noise: `store info`
  takes milliseconds either way); the largest size completes with its peak under 24 GiB; and the cost of 100k
  lookups grows from the smallest to the largest size no faster than n log n (the ratio to log n growth, what
  a sorted index promises, is printed too).
- The store's integrity checks stat each file of the rows they read; the time spent in them is measured in
  the store's processes and printed (`stat s`).
- Whether a repeat decided anything: the time target is judged on the per-repeat ratios (repeat r's store
  process over repeat r's anchor process, run back to back), their median against TARGET_RATIO: a drift of the
  machine between repeats touches both sides of a repeat and cancels in its ratio (`embedstore.base.paired_verdict`,
  the rule `benchmarks/encode.py` uses too). The raw spread of each side's repeats ((max - min) / median) is printed
  beside each median, the spread of the ratios beside the ratio; an operation whose ratios spread by more than
  `paired_verdict.NOISY_SPREAD` (10%) while the repeats disagree about the target gets "noisy, no verdict"
  instead of PASS/FAIL. The page cache decided much of a read's time when it was left to chance (the anchor's
  "gather a third" ran 0.78-2.55 s between runs, a 97 % spread at 1M rows), hence the set states above; each
  process measures, just before its operation, which share of the bytes of the files its side reads is resident
  in the page cache (`mincore`), and the table prints it (`cache`: the lowest and highest share over the
  repeats; "-" for the build, whose files do not exist yet). Beside it,
  `cores`: what the machine did during the slowest repeat (`machine_load`: cores the operation kept busy / cores
  every other process used / cores the hypervisor stole), so a spread says whether the machine was shared; an
  operation during which other processes or the hypervisor took more than `BUSY_CORES` (a quarter of a core) in
  any repeat gets "noisy, no verdict" too, even the build's single run. Their share is judged over at least
  `MIN_WINDOW` (0.2 s, waited out after a shorter operation's timing): /proc/stat counts 10 ms ticks, and over
  the few milliseconds of `store info` one tick of any process read as a busy core.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from embedstore.base.machine_load import BUSY_CORES, cores_text, machine_load, taken
from embedstore.base.paired_verdict import RatioVerdict, judge_ratio, missed_by, spread

DIM = 384
BLOCK_ROWS = 65536  # rows generated and written per step of a build (one shard of the store's layout)
LOOKUPS, SMALL_GATHER = 100_000, 10_000
FLOOR_SECONDS, FLOOR_MIB = 0.05, 32
TARGET_RATIO, MACHINE_GIB = 1.5, 24
OPS = ("build", "lookup 100k", "gather 10k", "gather 1/3", "store info")


def resident_share(paths: list[Path]) -> float | None:
    """The share of the bytes of `paths` resident in the page cache (Linux `mincore` through ctypes); None where
    the call is unavailable or there is nothing to read."""
    import ctypes
    import ctypes.util
    import mmap

    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.mmap.restype, libc.mmap.argtypes = ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                                              ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    page = mmap.PAGESIZE
    resident = total = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            pages = (size + page - 1) // page
            vec = (ctypes.c_ubyte * pages)()
            ok = libc.mincore(addr, size, vec) == 0
            libc.munmap(addr, size)
            if not ok:
                return None
            resident += sum(b & 1 for b in vec)
            total += pages
        finally:
            os.close(fd)
    return resident / total if total else None


CACHE_STATES = ("warm", "cold")
"""The page-cache state each read operation starts from, set in its process just before it runs (`set_cache`):
warm, every byte of its side's files resident (read through once, as after an encode or a run that read them);
cold, none of them (written back and dropped with POSIX_FADV_DONTNEED, as after a reboot or when other files
pushed them out). Left to chance, the state was whatever the previous processes left: a read's time then said as
much about the order of the runs as about the layout."""


def set_cache(paths: list[Path], state: str) -> None:
    """Put the bytes of `paths` in the page cache (warm) or out of it (cold). Dropping is advice the kernel takes
    for clean pages no process maps: the files are fsynced first, and `resident_share` measured afterwards says
    what the state really was."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            if state == "warm":
                while os.read(fd, 1 << 24):
                    pass
            else:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


COUNTS = ("user_s", "system_s", "read_mib", "major_faults", "minor_faults")


def _io_counts() -> dict[str, float]:
    """CPU seconds in user and kernel mode, bytes read from the disk (/proc/self/io `read_bytes`: the page cache's
    misses, unlike `rchar`), and page faults: major (a memory map's misses) and minor (a page the kernel had to
    find and map: a memory map's hits, and every fresh page of a new array, zeroed, reclaimed from the page cache
    when memory is short) of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines()) \
        if Path("/proc/self/io").is_file() else {}
    return {"user_s": usage.ru_utime, "system_s": usage.ru_stime, "read_mib": int(io.get("read_bytes", 0)) / 2**20,
            "major_faults": usage.ru_majflt, "minor_faults": usage.ru_minflt}


def _side_files(side: str, work: Path) -> list[Path]:
    if side == "store":
        return [p for p in (work / "store.zarr").rglob("*") if p.is_file()]
    return sorted(work.glob("anchor_*.npy"))


def _key():
    from embedstore.store import StoreKey
    return StoreKey(model="synthetic", fingerprint="0" * 16, pooling="mean", layer=12, max_length=256, prefix="",
                    dtype="float16")


def _block(n: int, start: int) -> np.ndarray:
    rows = min(BLOCK_ROWS, n - start)
    return np.random.default_rng(start).standard_normal((rows, DIM), dtype=np.float32).astype(np.float16)


# ---- the operations, each run in its own process: return seconds (and the store's stat seconds) ----

def _build_store(work: Path, n: int) -> float:
    from embedstore.store import Store
    ids, key = np.load(work / "ids.npy"), _key()
    shutil.rmtree(work / "store.zarr", ignore_errors=True)  # each repeat builds from nothing, as the anchor does
    st = Store.open(work / "store.zarr")
    spent = 0.0
    with st.writer() as w:
        kw = w.key(key, DIM, {"synthetic": True})
        for start in range(0, n, BLOCK_ROWS):
            vectors = _block(n, start)  # generating the data is not timed, on either side
            t0 = time.perf_counter()
            kw.append(ids[start:start + len(vectors)], vectors)
            spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    Store.open(st.path).contains_ids(key, ids[:1])  # builds (and saves) the id index, as the first reader would
    return spent + time.perf_counter() - t0


def _build_anchor(work: Path, n: int) -> float:
    ids = np.load(work / "ids.npy")
    vectors = np.lib.format.open_memmap(work / "anchor_vectors.npy", mode="w+", dtype=np.float16, shape=(n, DIM))
    spent = 0.0
    for start in range(0, n, BLOCK_ROWS):
        block = _block(n, start)
        t0 = time.perf_counter()
        vectors[start:start + len(block)] = block
        spent += time.perf_counter() - t0
    t0 = time.perf_counter()
    vectors.flush()
    del vectors
    as_bytes = ids.view("S16").ravel()
    order = np.argsort(as_bytes)
    np.save(work / "anchor_ids_sorted.npy", as_bytes[order])
    np.save(work / "anchor_rows.npy", order)
    return spent + time.perf_counter() - t0


def _anchor_rows(work: Path, ids: np.ndarray) -> np.ndarray:
    """Rows of `ids` in the anchor (-1 if absent): searchsorted in the memory-mapped sorted ids."""
    sorted_ids = np.load(work / "anchor_ids_sorted.npy", mmap_mode="r")
    rows = np.load(work / "anchor_rows.npy", mmap_mode="r")
    query = ids.view("S16").ravel()
    pos = np.minimum(np.searchsorted(sorted_ids, query), len(sorted_ids) - 1)
    found = sorted_ids[pos] == query
    return np.where(found, rows[pos], -1)


def _anchor_gather(work: Path, ids: np.ndarray) -> np.ndarray:
    rows = _anchor_rows(work, ids)
    vectors = np.load(work / "anchor_vectors.npy", mmap_mode="r")
    unique, inverse = np.unique(rows, return_inverse=True)  # memmaps read fastest in row order
    return np.asarray(vectors[unique], dtype=np.float32)[inverse]


def _anchor_info(work: Path) -> dict:
    vectors = np.load(work / "anchor_vectors.npy", mmap_mode="r")
    return {"rows": vectors.shape[0], "dim": vectors.shape[1],
            "size_bytes": sum(p.stat().st_size for p in work.glob("anchor_*.npy"))}


def _run_op(op: str, side: str, work: Path, n: int, state: str | None) -> dict:
    """Run one operation in this process from the page-cache `state` (None for the build, whose files do not exist
    yet); the timing and memory protocol is the module docstring's."""
    from embedstore.store import Store
    from embedstore.store.zarr_backend import ZarrBackend
    stat_seconds = [0.0]
    missing = ZarrBackend._missing

    def timed_missing(self, *args):
        t0 = time.perf_counter()
        try:
            return missing(self, *args)
        finally:
            stat_seconds[0] += time.perf_counter() - t0
    ZarrBackend._missing = timed_missing

    query = {"lookup 100k": "lookups", "gather 10k": "small", "gather 1/3": "third"}.get(op)
    ids = np.load(work / f"query_{query}.npy") if query else None
    store, key = work / "store.zarr", _key()
    calls = {
        ("build", "store"): lambda: _build_store(work, n),
        ("build", "anchor"): lambda: _build_anchor(work, n),
        ("lookup 100k", "store"): lambda: Store.open(store).contains_ids(key, ids),
        ("lookup 100k", "anchor"): lambda: _anchor_rows(work, ids) >= 0,
        ("gather 10k", "store"): lambda: Store.open(store).get_ids(key, ids),
        ("gather 10k", "anchor"): lambda: _anchor_gather(work, ids),
        ("gather 1/3", "store"): lambda: Store.open(store).get_ids(key, ids),
        ("gather 1/3", "anchor"): lambda: _anchor_gather(work, ids),
        ("store info", "store"): lambda: Store.open(store).info(),
        ("store info", "anchor"): lambda: _anchor_info(work),
    }
    if state is not None:
        set_cache(_side_files(side, work), state)
    cache = None if op == "build" else resident_share(_side_files(side, work))
    rss_before = _status_kib("VmRSS")
    reset = _reset_peak()
    load: dict = {}
    before = _io_counts()
    with machine_load(load):
        t0 = time.perf_counter()
        result = calls[(op, side)]()
        seconds = time.perf_counter() - t0
    counts = {name: value - before[name] for name, value in _io_counts().items()}
    peak = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if op == "build":
        seconds = result
    check = _checksum(op, result)
    return {"seconds": seconds, "peak_mib": max(0, peak - rss_before) / 1024, "stat_seconds": stat_seconds[0],
            "check": check, "peak_reset": reset, "cache": cache, "load": load, **counts}


def _checksum(op: str, result) -> object:
    """What both sides must agree on: the found count of a lookup, the sum of a gather, the row count."""
    if op == "lookup 100k":
        return int(np.asarray(result).sum())
    if op.startswith("gather"):
        return float(np.asarray(result, np.float64).sum())
    if op == "store info":
        return int(result["keys"][0]["rows"]) if "keys" in result else int(result["rows"])
    return None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so the peak is this operation's, not the imports'."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ---- the driver ----

_RUNNING: dict[str, object] = {}
"""The work directory being measured and the child process running, for `_on_sigterm`."""


def _on_sigterm(signum: int, frame: object) -> None:
    """A kill removes the keys (the 10M-row pair is ~15 GB; a killed run left it in /tmp, 2026-12-07) and exits with
    128 + SIGTERM. Done here rather than by raising SystemExit for `finally` to clean up: a handler that runs while
    the interpreter is inside a finalizer has its exception ignored, and the test of this saw such a run carry on to
    the end (exit 0) once in the full suite."""
    child = _RUNNING.get("child")
    if isinstance(child, subprocess.Popen):
        child.kill()
        child.wait()
    if isinstance(work := _RUNNING.get("work"), Path):
        shutil.rmtree(work, ignore_errors=True)
    os._exit(128 + signum)


def _run_child(op: str, side: str, work: Path, n: int, state: str | None, huge_pages: bool = True) -> dict:
    with subprocess.Popen([sys.executable, __file__, "--op", op, "--side", side, "--work", str(work),
                           "--rows", str(n), *(["--state", state] if state else []),
                           *([] if huge_pages else ["--no-huge-pages"])],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as child:
        _RUNNING["child"] = child
        stdout, stderr = child.communicate()
        _RUNNING.pop("child", None)
    if child.returncode != 0:
        raise SystemExit(f"error: {op} on the {side} ({n:,} rows) failed: {stderr.strip()[-2000:]}")
    return json.loads(stdout.strip().splitlines()[-1])


def _measure(op: str, work: Path, n: int, repeats: int, state: str | None) -> tuple[dict, dict]:
    """(store, anchor) of `op`, each process starting from the page-cache `state`: the two sides' processes
    alternate, the side that goes first swapping at each repeat, so a drift of the machine touches both sides
    alike. The build repeats too (each from nothing): a single build decided PASS or FAIL by chance."""
    runs: dict[str, list[dict]] = {"store": [], "anchor": []}
    for r in range(repeats):
        for side in ("store", "anchor") if r % 2 == 0 else ("anchor", "store"):
            runs[side].append(_run_child(op, side, work, n, state))
    return _summary(runs["store"]), _summary(runs["anchor"])


def _summary(runs: list[dict]) -> dict:
    seconds = [r["seconds"] for r in runs]
    caches = [r["cache"] for r in runs if r["cache"] is not None]
    return {"seconds": statistics.median(seconds), "repeats": seconds, "spread": spread(seconds),
            "cores": cores_text(seconds, [r["load"] for r in runs]), "taken": taken([r["load"] for r in runs]),
            "cache": (min(caches), max(caches)) if caches else None,
            "peak_mib": statistics.median(r["peak_mib"] for r in runs),
            "stat_seconds": statistics.median(r["stat_seconds"] for r in runs),
            **{name: statistics.median(r[name] for r in runs) for name in COUNTS},
            "check": runs[0]["check"], "peak_reset": all(r["peak_reset"] for r in runs)}


def _prepare(work: Path, n: int) -> None:
    rng = np.random.default_rng(n)
    ids = np.frombuffer(rng.bytes(n * 16), np.uint8).reshape(n, 16)
    np.save(work / "ids.npy", ids)
    np.save(work / "query_lookups.npy", np.concatenate([ids[rng.choice(n, LOOKUPS // 2, replace=False)],
                                                         np.frombuffer(rng.bytes(LOOKUPS // 2 * 16), np.uint8)
                                                         .reshape(-1, 16)]))  # half present, half absent
    np.save(work / "query_small.npy", ids[rng.choice(n, min(SMALL_GATHER, n), replace=False)])
    np.save(work / "query_third.npy", ids[rng.permutation(n)[:n // 3]])


def _spread(m: dict) -> str:
    return "1 run" if m["spread"] is None else f"{100 * m['spread']:.0f}%"


def _cache(m: dict) -> str:
    if m["cache"] is None:
        return "-"
    low, high = m["cache"]
    return f"{100 * low:.0f}%" if round(100 * low) == round(100 * high) else f"{100 * low:.0f}-{100 * high:.0f}%"


def _cpu(m: dict) -> str:
    return f"{m['user_s']:.2f}+{m['system_s']:.2f}"


def _ratio(store: float, anchor: float, floor: float) -> float:
    return max(store, floor) / max(anchor, floor)


def time_verdict(store_seconds: list[float], anchor_seconds: list[float]) -> RatioVerdict:
    """The time target on the per-repeat ratios (repeat r of each side, run back to back; the floor applied)."""
    return judge_ratio([_ratio(s, a, FLOOR_SECONDS) for s, a in zip(store_seconds, anchor_seconds, strict=True)],
                       TARGET_RATIO, at_least=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3, help="processes per operation, the build included (median)")
    ap.add_argument("--quick", action="store_true", help="100k and 200k rows, 2 repeats: checks the script runs")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the keys (default: a temporary directory)")
    ap.add_argument("--cache", nargs="+", choices=CACHE_STATES, default=list(CACHE_STATES),
                    help="the page-cache states each read operation is measured from (default: both)")
    ap.add_argument("--no-huge-pages", action="store_true",
                    help="numpy's arrays without transparent huge pages (numpy asks for them on Linux; whether the "
                         "kernel finds them depends on how fragmented memory is: see the module's docstring)")
    ap.add_argument("--op", help=argparse.SUPPRESS)
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--state", choices=CACHE_STATES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.op:  # a child process: one operation
        if args.no_huge_pages:
            from numpy._core.multiarray import _set_madvise_hugepage
            _set_madvise_hugepage(False)
        print(json.dumps(_run_op(args.op, args.side, args.work, args.rows[0], args.state)))
        return

    if args.quick:
        args.rows, args.repeats = [100_000, 200_000], 2
    if min(args.rows) < LOOKUPS // 2:
        ap.error(f"--rows {min(args.rows)}: expected at least {LOOKUPS // 2:,} (the lookups draw that many distinct "
                 "stored ids)")
    from rich.console import Console
    from rich.table import Table
    console = Console(width=250)
    verdicts, lookups, peaks = [], {}, []
    signal.signal(signal.SIGTERM, _on_sigterm)
    for n in sorted(args.rows):
        # named (and known to the SIGTERM handler) before it is made, so a kill at any point cannot leave it behind
        work = Path(args.dir or tempfile.gettempdir()) / f"store-bench-{n}-{os.getpid()}-{secrets.token_hex(4)}"
        _RUNNING["work"] = work
        try:
            work.mkdir(mode=0o700)
            _prepare(work, n)
            table = Table(title=f"{n:,} rows x {DIM} float16 (median of {args.repeats} processes)")
            for col in ("operation", "store s", "spread", "cache", "CPU user+sys", "read MiB", "cores", "anchor s",
                        "spread ", "cache ", "CPU user+sys ", "read MiB ", "cores ", "time ratio", "ratio spread",
                        "store MiB", "anchor MiB", "mem ratio", "stat s", "target"):
                table.add_column(col, justify="left" if col == "operation" else "right")
            for op, state in [(op, state) for op in OPS for state in ([None] if op == "build" else args.cache)]:
                s, a = _measure(op, work, n, args.repeats, state)
                if s["check"] is not None and not np.isclose(s["check"], a["check"], rtol=1e-6):
                    raise SystemExit(f"error: {op} at {n:,} rows: the store answered {s['check']}, the anchor "
                                     f"{a['check']}; expected the same")
                timing = time_verdict(s["repeats"], a["repeats"])
                t_ratio = timing.median
                m_ratio = _ratio(s["peak_mib"], a["peak_mib"], FLOOR_MIB)
                missed = [f"{what} {by}" for what, ratio in (("time", t_ratio), ("memory", m_ratio))
                          if (by := missed_by(ratio, TARGET_RATIO, at_least=False))]
                ok = not missed
                noisy = timing.noisy or any(x["taken"] > BUSY_CORES for x in (s, a))
                verdicts.append(None if noisy else ok)
                peaks.append(s["peak_mib"])
                if op == "lookup 100k" and state == args.cache[0]:
                    lookups[n] = s["seconds"]
                table.add_row(op if state is None else f"{op}, {state}", f"{s['seconds']:.3f}", _spread(s), _cache(s),
                              _cpu(s), f"{s['read_mib']:.0f}", s["cores"], f"{a['seconds']:.3f}",
                              _spread(a), _cache(a), _cpu(a), f"{a['read_mib']:.0f}", a["cores"],
                              f"{t_ratio:.2f}x",
                              "1 run" if timing.spread is None else f"{100 * timing.spread:.0f}%",
                              f"{s['peak_mib']:.0f}", f"{a['peak_mib']:.0f}",
                              f"{m_ratio:.2f}x", f"{s['stat_seconds']:.4f}",
                              "noisy, no verdict" if noisy else "PASS" if ok else f"FAIL, {', '.join(missed)}")
            console.print(table)
            if not s["peak_reset"]:
                console.print("note: /proc/self/clear_refs unavailable; peaks include the imports")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    decided = [v for v in verdicts if v is not None]
    overall = "FAIL" if not all(decided) else "PASS" if len(decided) == len(verdicts) else \
        f"no verdict ({len(verdicts) - len(decided)} noisy operations, the rest PASS)"
    console.print(f"every operation within {TARGET_RATIO}x of the anchor (time and peak memory, floors "
                  f"{FLOOR_SECONDS} s / {FLOOR_MIB} MiB): {overall}")
    largest = max(args.rows)
    fits = max(peaks) < MACHINE_GIB * 1024
    console.print(f"{largest:,} rows on a {MACHINE_GIB} GiB machine: largest store peak {max(peaks):.0f} MiB: "
                  f"{'PASS' if fits else 'FAIL'}")
    if len(lookups) > 1:
        small, large = min(lookups), max(lookups)
        growth = lookups[large] / lookups[small]
        nlogn = large * math.log(large) / (small * math.log(small))
        logn = math.log(large) / math.log(small)
        console.print(f"100k lookups ({args.cache[0]} page cache), {small:,} -> {large:,} rows: {growth:.2f}x the "
                      f"time (n log n allows "
                      f"{nlogn:.2f}x, log n {logn:.2f}x): {'PASS' if growth <= nlogn else 'FAIL'}")


if __name__ == "__main__":
    main()
