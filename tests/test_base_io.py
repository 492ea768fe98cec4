"""The package's one way to write files atomically, lock a writer, hash files and build progress bars."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from rich.progress import TextColumn

from embedstore.base import atomic
from embedstore.base.errors import ConfigError
from embedstore.base.files import dir_sha256, file_sha256
from embedstore.base.lock import WriterLock
from embedstore.base.progress import make_progress
from embedstore.store.backend import Backend, SharedBackend
from embedstore.store.hdf5_backend import HDF5Backend
from embedstore.store.zarr_backend import ZarrBackend


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _record_io(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(operation, path) for every fsync and rename, in order."""
    events: list[tuple[str, str]] = []
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append(("rename", str(dst)))
        real_replace(src, dst)

    def rename(src, dst) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return events


def test_write_json_fsyncs_the_file_then_renames_then_fsyncs_the_directory(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    events = _record_io(monkeypatch)
    target = tmp_path / "out.json"
    atomic.write_json(target, {"a": "é"})
    assert target.read_text(encoding="utf-8") == '{\n "a": "é"\n}\n'
    assert [op for op, _ in events] == ["fsync", "rename", "fsync"]
    assert Path(events[0][1]).parent == tmp_path and Path(events[0][1]).name.startswith(".out.json.partial-")
    assert events[1][1] == str(target) and events[2][1] == str(tmp_path)


def test_atomic_files_get_normal_permissions_and_leave_no_temporary(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "out.bin"
    atomic.write_bytes(target, b"one")
    atomic.write_text(target, "two")
    assert target.read_bytes() == b"two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_atomic_dir_fsyncs_its_files_before_publishing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       umask_022: None) -> None:
    out = tmp_path / "model"
    events = _record_io(monkeypatch)
    with atomic.atomic_dir(out) as tmp:
        (tmp / "config.json").write_text("{}")
    renamed = events.index(("rename", str(out)))
    assert any(op == "fsync" and path.endswith("/config.json") for op, path in events[:renamed])
    assert events[renamed + 1:] == [("fsync", str(tmp_path))]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 and (out / "config.json").read_text() == "{}"


def test_publish_replaces_a_directory_only_once_the_new_one_is_complete(tmp_path: Path) -> None:
    out, new = tmp_path / "s.zarr", tmp_path / "s.merging-1.zarr"
    out.mkdir()
    (out / "old").write_text("old")
    new.mkdir()
    (new / "new").write_text("new")
    atomic.publish(new, out)
    assert [p.name for p in out.iterdir()] == ["new"]
    assert [p.name for p in tmp_path.iterdir()] == ["s.zarr"]


def test_atomic_dir_still_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "f").write_text("x")
    with pytest.raises(ConfigError, match="already exists and is not empty"):
        with atomic.atomic_dir(tmp_path / "out"):
            pass


def test_writer_lock_names_the_holder_and_is_free_again_after_release(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"

    def busy(pid: str) -> ConfigError:
        return ConfigError(f"held by {pid}")

    with WriterLock(path, busy):
        assert path.read_text() == str(os.getpid())
        with pytest.raises(ConfigError, match=f"^held by {os.getpid()}$"):
            WriterLock(path, busy).acquire()
    WriterLock(path, busy).acquire().release()


def test_writer_lock_without_pid_leaves_the_locked_file_as_it_was(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text('{"cell_id": "a"}\n')
    with WriterLock(results, lambda pid: ConfigError(f"busy ({pid})"), records_pid=False):
        with pytest.raises(ConfigError, match=r"^busy \(unknown\)$"):
            WriterLock(results, lambda pid: ConfigError(f"busy ({pid})"), records_pid=False).acquire()
    assert results.read_text() == '{"cell_id": "a"}\n'


def test_file_and_directory_hashes(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_bytes(b"bee")
    (tmp_path / "a.txt").write_bytes(b"a" * (3 << 20))  # several read chunks
    (tmp_path / "sub").mkdir()  # directories are not part of a directory's hash
    assert file_sha256(tmp_path / "a.txt") == hashlib.sha256(b"a" * (3 << 20)).hexdigest()
    inner = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()[:16] for name in ("a.txt", "b.txt")}
    expected = hashlib.sha256(f"a.txt\n{inner['a.txt']}\nb.txt\n{inner['b.txt']}\n".encode()).hexdigest()
    assert dir_sha256(tmp_path) == expected


def test_make_progress_builds_the_bar_callers_ask_for() -> None:
    bar = make_progress(TextColumn("x"), enabled=False, stderr=True, expand=True)
    assert bar.disable and bar.console.stderr and bar.expand
    assert not make_progress(TextColumn("x")).console.stderr


def test_backends_implement_the_interface_and_declare_shared_writes(tmp_path: Path) -> None:
    zarr_backend, hdf5_backend = ZarrBackend(tmp_path / "s.zarr"), HDF5Backend(tmp_path / "s.h5")
    assert isinstance(zarr_backend, SharedBackend) and zarr_backend.shared_writes
    assert isinstance(hdf5_backend, Backend) and not hdf5_backend.shared_writes
    assert not isinstance(hdf5_backend, SharedBackend)


def test_a_file_written_inside_a_directory_being_published_is_fsynced_once(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A saved estimator inside atomic_dir: its files are fsynced by the directory's publication only, each once
    and before the rename that publishes them (each file's own publish fsynced it and the directory again)."""
    out = tmp_path / "head"
    events = _record_io(monkeypatch)
    with atomic.atomic_dir(out) as tmp:
        with atomic.atomic_path(tmp / "config.json") as config, atomic.atomic_path(tmp / "model.bin") as weights:
            config.write_text("{}")
            weights.write_bytes(b"w")
    synced = [Path(path).name for op, path in events if op == "fsync"]
    assert synced.count("config.json") == 1 and synced.count("model.bin") == 1
    published = events.index(("rename", str(out)))
    assert {Path(path).name for op, path in events[:published] if op == "fsync"} >= {"config.json", "model.bin"}
    assert len(synced) == 4  # the two files and the partial directory before the rename, the parent after it
    assert (out / "config.json").read_text() == "{}" and (out / "model.bin").read_bytes() == b"w"
    assert not atomic.inside_partial(out / "config.json")
