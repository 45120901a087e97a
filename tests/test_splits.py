"""Near-duplicate grouping and the grouped split."""

from __future__ import annotations

import numpy as np
import pytest

from lib.splits import (
    group_near_duplicates,
    hamming_matrix,
    near_duplicate_pairs,
    perceptual_hash,
    split_csv,
    split_groups,
    thumbnail_signature,
)


def textured(seed: int, size=(120, 160)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def test_hamming_matrix_counts_differing_bits():
    h = np.array([[0, 0, 0, 0], [1, 0, 0, 1], [1, 1, 1, 1]], bool)
    assert hamming_matrix(h).tolist() == [[0, 2, 4], [2, 0, 2], [4, 2, 0]]


def test_near_duplicate_frames_match_and_unrelated_frames_do_not():
    a = textured(0)
    a_noisy = np.clip(a.astype(int) + np.random.default_rng(9).integers(-6, 7, a.shape), 0, 255).astype(
        np.uint8
    )
    b = textured(1)
    hashes = np.stack([perceptual_hash(x) for x in (a, a_noisy, b)])
    signatures = np.stack([thumbnail_signature(x) for x in (a, a_noisy, b)])
    close = near_duplicate_pairs(hashes, signatures, max_distance=6, min_correlation=0.9)
    assert close[0, 1] and not close[0, 2] and not close[1, 2]


def test_groups_are_connected_components():
    adjacent = np.zeros((5, 5), bool)
    adjacent[0, 3] = adjacent[3, 0] = True
    adjacent[3, 4] = adjacent[4, 3] = True
    assert group_near_duplicates(adjacent).tolist() == [0, 1, 2, 0, 0]


def test_split_is_deterministic_and_sized():
    groups = np.arange(1000) // 2  # 500 pairs of near-duplicates
    first = split_groups(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    second = split_groups(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=3)
    assert all(np.array_equal(first[k], second[k]) for k in first)
    assert [len(first[k]) for k in ("train", "val", "test")] == [700, 150, 150]


def test_no_group_crosses_splits():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(300), rng.integers(1, 6, 300))
    splits = split_groups(groups, {"train": 0.7, "val": 0.15, "test": 0.15}, seed=1)
    owner = {}
    for name, idx in splits.items():
        for g in set(groups[idx].tolist()):
            assert owner.setdefault(g, name) == name
    assert sum(len(v) for v in splits.values()) == len(groups)


def test_other_seed_gives_other_split():
    groups = np.arange(200)
    a = split_groups(groups, {"train": 0.5, "test": 0.5}, seed=1)
    b = split_groups(groups, {"train": 0.5, "test": 0.5}, seed=2)
    assert not np.array_equal(a["train"], b["train"])


def test_fractions_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        split_groups(np.arange(10), {"train": 0.7, "test": 0.2}, seed=0)


def test_split_csv_is_sorted_by_stem():
    text = split_csv(["b", "a", "c"], np.array([5, 7, 9]), np.array([0, 1]))
    assert text == "stem,group\na,7\nb,5\n"
