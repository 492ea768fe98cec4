"""Row selection: size options, seeded subsamples and aligner/task disjointness."""
import numpy as np
import pytest

from embedstore.base.errors import ConfigError, InputError
from embedstore.data.selection import overlap_mask, parse_size, subsample


@pytest.mark.parametrize("text,expected", [("15k", 15_000), ("1k", 1_000), ("1K", 1_000), ("1.5k", 1_500),
                                           ("20000", 20_000), ("20_000", 20_000), ("all", None), ("ALL", None),
                                           (500, 500)])
def test_parse_size_accepts(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["15x", "", "0", "-5", "1.5", "1.0005k", "k", "15 k k", 0, True])
def test_parse_size_rejects_naming_value_and_forms(text):
    with pytest.raises(ConfigError) as e:
        parse_size(text)
    assert repr(text) in str(e.value) and "15k" in str(e.value) and "'all'" in str(e.value)


def test_subsample_is_seeded_sorted_and_nested():
    small, large = subsample(1000, 10, seed=1), subsample(1000, 100, seed=1)
    assert np.array_equal(small, subsample(1000, 10, seed=1))
    assert not np.array_equal(small, subsample(1000, 10, seed=2))
    assert np.all(np.diff(small) > 0) and small.dtype == np.int64
    assert set(small) <= set(large)
    assert np.array_equal(subsample(5, None, seed=0), np.arange(5))


def test_subsample_refuses_more_rows_than_available():
    with pytest.raises(ConfigError, match="^asked for 20,000 rows but train.tsv holds 14,871; ask for at most 14,871 \\(or all\\)$"):
        subsample(14_871, 20_000, seed=0, what="train.tsv")


def ids(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 16), dtype=np.uint8)


def test_overlap_mask_marks_pairs_seen_in_task_rows():
    pairs = ids(10)
    task = np.concatenate([pairs[[2, 7]], ids(5, seed=1)])
    assert np.flatnonzero(~overlap_mask(pairs, task)).tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    assert np.flatnonzero(~overlap_mask(pairs, [bytes(row) for row in task])).tolist() == [0, 1, 3, 4, 5, 6, 8, 9]
    assert overlap_mask([bytes(row) for row in pairs], task).tolist() == [i in (2, 7) for i in range(10)]


def test_overlap_mask_of_ids_with_themselves_is_all_true():
    pairs = ids(6)
    assert overlap_mask(pairs, pairs).tolist() == [True] * 6


def test_overlap_mask_rejects_malformed_ids():
    with pytest.raises(InputError, match=r"pair_ids must be an \(n, 16\) uint8 array"):
        overlap_mask(np.zeros((3, 8), dtype=np.uint8), ids(2))
    with pytest.raises(InputError, match="task_ids must be 16-byte text ids"):
        overlap_mask(ids(3), [b"short"])
