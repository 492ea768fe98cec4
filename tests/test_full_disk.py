"""Full disks and read-only targets: a one-line StoreError, committed rows still readable and correct, no partial
files and no lock file that the failed writer created. Real filesystems where possible (a small tmpfs when
running as root), an injected ENOSPC otherwise."""
import errno
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from embedstore.base.errors import StoreError
from embedstore.data.hashing import text_ids
from embedstore.store import Store, StoreKey

pytestmark = pytest.mark.fault('full disk and read-only targets')

KEY = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")


def vectors(n: int, dim: int = 384) -> np.ndarray:
    return (np.arange(n * dim, dtype=np.float32).reshape(n, dim) % 97) + 1


def leftovers(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if "partial" in p.name
                  or "merging" in p.name)


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MB filesystem of our own (root only); skipped where it cannot be mounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


FILL_UNTIL_FULL = textwrap.dedent("""
    import sys
    import numpy as np
    from embedstore.base.errors import StoreError
    from embedstore.data.hashing import text_ids
    from embedstore.store import Store, StoreKey
    key = StoreKey(model="m", fingerprint="f" * 16, pooling="mean", layer=2, max_length=128, prefix="")
    texts = [f"more {i}" for i in range(4000)]
    try:
        with Store.open(sys.argv[1]).writer() as w:
            kw = w.key(key, 384, {}, chunk_rows=128)
            for i in range(0, len(texts), 128):
                kw.append(text_ids(texts[i:i + 128]), np.ones((128, 384), np.float32))
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
""")


@pytest.mark.heavy
@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_a_full_disk_is_a_one_line_error_and_committed_rows_stay(tmpfs, name):
    """Before: zarr ended in an OSError traceback; HDF5 crashed with a segfault (exit 139) on close, leaving
    its .partial file and lock behind. The writer runs in a child process so that a crash is seen as one."""
    path = tmpfs / name
    texts = [f"t{i}" for i in range(256)]
    with Store.open(path).writer() as w:
        w.key(KEY, 384, {}, chunk_rows=128).append(text_ids(texts), vectors(256))
    done = subprocess.run([sys.executable, "-c", FILL_UNTIL_FULL, str(path)], capture_output=True, text=True)
    assert done.returncode == 1, (done.returncode, done.stderr[-2000:])
    assert done.stderr.count("\n") == 1 and done.stderr.startswith(f"error: {path}: ")
    assert "space" in done.stderr
    st = Store.open(path)
    np.testing.assert_array_equal(st.get(KEY, texts), vectors(256))
    assert st.verify() == []
    assert leftovers(tmpfs) == []


def test_a_new_hdf5_store_on_a_full_disk_leaves_no_file_and_no_lock(tmp_path, monkeypatch):
    """Injected: the filesystem reports almost no free space."""
    real = shutil.disk_usage
    monkeypatch.setattr("embedstore.store.hdf5_backend.shutil.disk_usage",
                        lambda p: real(p)._replace(free=4096))
    path = tmp_path / "new.h5"
    with pytest.raises(StoreError, match=r"new.h5: no space left for rows 0\.\.3 of key .*bytes needed"):
        with Store.open(path).writer() as w:
            w.key(KEY, 384, {}, chunk_rows=128).append(text_ids(["a", "b", "c"]), vectors(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_injected_enospc_in_zarr_is_a_one_line_error_and_committed_rows_stay(tmp_path, monkeypatch):
    path = tmp_path / "s.zarr"
    texts = [f"t{i}" for i in range(8)]
    with Store.open(path).writer() as w:
        w.key(KEY, 4, {}, chunk_rows=4).append(text_ids(texts), vectors(8, 4))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("zarr.storage._local._put", full)
    with pytest.raises(StoreError, match=r"s.zarr: cannot write the store \(No space left on device\)") as e:
        with Store.open(path).writer() as w:
            w.key(KEY, 4, {}, chunk_rows=4).append(text_ids(["x", "y"]), vectors(2, 4))
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    st = Store.open(path)
    assert st.rows(KEY) == 8
    np.testing.assert_array_equal(st.get(KEY, texts), vectors(8, 4))


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory whose contents can be written now and not after `make_read_only()`: a tmpfs remounted
    read-only when root (root ignores permission bits), permission bits otherwise."""
    directory = tmp_path / "ro"
    directory.mkdir()
    root = os.geteuid() == 0
    if root and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(directory)],
                               capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")

    def make_read_only() -> None:
        if root:
            subprocess.run(["mount", "-o", "remount,ro", str(directory)], check=True)
        else:
            for p in [directory, *directory.rglob("*")]:
                p.chmod(p.stat().st_mode & ~0o222)

    yield directory, make_read_only
    if root:
        subprocess.run(["umount", "-l", str(directory)], check=True)
    else:
        for p in [directory, *directory.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_a_read_only_store_fails_before_the_model_loads(read_only_dir, tiny_model_dir, monkeypatch, name):
    """Before: the error (a traceback) came after the model had loaded."""
    from embedstore.encoding import backend as backend_module
    from embedstore.encoding import encode as encode_module
    from embedstore.encoding.options import EncodeOptions

    directory, make_read_only = read_only_dir
    path = directory / name
    texts = [f"t{i}" for i in range(5)]
    with Store.open(path).writer() as w:
        w.key(KEY, 4, {}, chunk_rows=4).append(text_ids(texts), vectors(5, 4))
    make_read_only()

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the store was found read-only")

    monkeypatch.setattr(backend_module, "load_encoder", no_model)
    with pytest.raises(StoreError, match=rf"{name}: cannot write the store here .*expected a writable"):
        encode_module.encode(["new text"], store=path, options=EncodeOptions(model=str(tiny_model_dir)))
    np.testing.assert_array_equal(Store.open(path).get(KEY, texts), vectors(5, 4))
