"""`store/row_check.failing_rows`: the per-chunk digest check names exactly the rows a row-by-row digest
comparison names, whatever the group sizes, widths and damage (its tables are composed, not computed from
crc32c runs over zeros, so this is what holds them to the definition)."""
import numpy as np
import pytest

from embedstore.store import chunk_files, row_check


@pytest.mark.parametrize("dtype, dim", [(np.float16, 384), (np.float32, 3), (np.float16, 1)])
@pytest.mark.parametrize("seed", range(3))
def test_failing_rows_names_exactly_the_rows_whose_digest_differs(dtype, dim, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 3000))
    ids = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    vectors = rng.standard_normal((n, dim)).astype(dtype)
    digests = chunk_files.row_digests(ids, vectors)
    groups = np.sort(rng.integers(0, max(1, n // int(rng.integers(1, 1100))), n))  # 1 to ~1,000 rows a group
    assert row_check.failing_rows(ids, vectors, digests, groups).tolist() == []
    bad = np.sort(rng.choice(n, min(n, 7), replace=False))
    stale = vectors.copy()
    stale[bad[:3]] = 0  # rows of a stale file: zeros
    stale[bad[3:5]] = vectors[(bad[3:5] + 1) % n]  # another row's vector
    wrong_ids = ids.copy()
    wrong_ids[bad[5:], 0] ^= 1  # a flipped bit of the id
    expected = np.flatnonzero(chunk_files.row_digests(wrong_ids, stale).ravel() != digests.ravel())
    assert row_check.failing_rows(wrong_ids, stale, digests, groups).tolist() == expected.tolist()
    assert set(expected.tolist()) <= set(bad.tolist()) and len(expected) >= len(bad) - 1  # (a zero row may be zero)
