"""Issue 28 items 4 and 5: nothing the tool did not write is truncated or overwritten. A sweep refuses a results
path holding another kind of file before any write (its own results files, with a killed run's partial last line,
are still taken and mended); every writer lock refuses a symbolic link planted at its path instead of writing the
pid into the link's target."""
from __future__ import annotations

import numpy as np
import pytest

from embedstore.base.errors import ConfigError, EmbedstoreError, InputError
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey, merge_stores
from embedstore.study.sweep import run_sweep
from embedstore.text_training.files import run_lock

from test_sweep import fake_runner, make_config, same_context

pytestmark = pytest.mark.fault("files not ours: foreign results files, symlinked locks")

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")

FOREIGN = {
    "parquet": b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00\x12\x00\x00\n\x00\x00\x00\x01\x00PAR1",
    "parquet-one-line": b"PAR1\x15\x04\x15\x10\x15\x14L\x15\x02\x15\x00\x12\x00\x00\x08\x00PAR1",
    "text": b"first line\nsecond line without newline",
    "other-jsonl": b'{"name": "a"}\n{"name": "b"}\n{"name": "c',
}


@pytest.mark.parametrize("kind", FOREIGN)
def test_a_sweep_refuses_a_results_path_holding_another_file_and_leaves_it_as_it_was(tmp_path, kind):
    config = make_config(tmp_path)
    config.results.parent.mkdir(parents=True, exist_ok=True)
    config.results.write_bytes(FOREIGN[kind])
    with pytest.raises(InputError, match=str(config.results.name)):
        run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert config.results.read_bytes() == FOREIGN[kind]


def test_a_results_file_of_this_project_with_a_partial_last_line_is_still_taken(tmp_path):
    config = make_config(tmp_path)
    run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    lines = config.results.read_bytes().splitlines(keepends=True)
    config.results.write_bytes(b"".join(lines[:3]) + lines[3][:40])
    with pytest.warns(UserWarning, match="removing a partial last line"):
        summary = run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert len(summary.skipped) == 3 and len(summary.ok) == len(lines) - 3


def plant_link(lock: Path, tmp_path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.symlink_to(victim)
    return victim


from pathlib import Path  # noqa: E402


def write_key(path: Path) -> None:
    with Store.open(path).writer() as w:
        w.key(KEY, 3, {}).append(text_ids(["a"]), np.ones((1, 3), np.float32))


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_a_store_lock_that_is_a_symlink_is_refused(tmp_path, suffix):
    path = tmp_path / f"s{suffix}"
    victim = plant_link(tmp_path / f"s{suffix}.lock", tmp_path)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_key(path)
    assert victim.read_text() == "precious\n"


def test_a_merge_output_lock_that_is_a_symlink_is_refused(tmp_path):
    write_key(tmp_path / "a.zarr")
    victim = plant_link(tmp_path / "out.zarr.lock", tmp_path)
    with pytest.raises(ConfigError, match="symbolic link"):
        merge_stores([tmp_path / "a.zarr"], tmp_path / "out.zarr")
    assert victim.read_text() == "precious\n" and not (tmp_path / "out.zarr").exists()


def test_a_training_run_lock_that_is_a_symlink_is_refused(tmp_path):
    out = tmp_path / "run"
    victim = plant_link(out / ".embedstore-train.lock", tmp_path)
    with pytest.raises(ConfigError, match="symbolic link"):
        run_lock(out).acquire()
    assert victim.read_text() == "precious\n"


def test_a_sweep_results_path_that_is_a_symlink_is_refused(tmp_path):
    config = make_config(tmp_path)
    victim = plant_link(config.results, tmp_path)
    with pytest.raises(EmbedstoreError, match="symbolic link"):
        run_sweep(config, fake_runner, same_context, workers=1, progress=False)
    assert victim.read_text() == "precious\n"
