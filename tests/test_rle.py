import numpy as np
import pytest

from lib.rle import decode_rle, encode_rle


def test_all_zero_mask_is_one_run():
    assert encode_rle(np.zeros((2, 3), np.uint8)) == {"size": [2, 3], "counts": [6]}


def test_all_one_mask_starts_with_empty_zero_run():
    assert encode_rle(np.ones((2, 3), np.uint8)) == {"size": [2, 3], "counts": [0, 6]}


def test_runs_follow_row_major_order():
    mask = np.array([[0, 1, 1], [1, 0, 0]], np.uint8)
    assert encode_rle(mask)["counts"] == [1, 3, 2]


def test_first_pixel_set():
    mask = np.array([[1, 0], [0, 1]], np.uint8)
    assert encode_rle(mask)["counts"] == [0, 1, 2, 1]


def test_nonzero_values_count_as_one():
    mask = np.array([[0, 255, 7]], np.uint8)
    assert encode_rle(mask)["counts"] == [1, 2]


def test_empty_mask_round_trips():
    rle = encode_rle(np.zeros((0, 4), np.uint8))
    assert rle == {"size": [0, 4], "counts": []}
    assert decode_rle(rle).shape == (0, 4)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (31, 17), (256, 256)])
def test_random_masks_round_trip(shape):
    rng = np.random.default_rng(0)
    mask = (rng.random(shape) < 0.3).astype(np.uint8)
    decoded = decode_rle(encode_rle(mask))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask)


def test_counts_are_plain_ints_for_json():
    rle = encode_rle(np.eye(3, dtype=np.uint8))
    assert all(type(c) is int for c in rle["counts"])


@pytest.mark.parametrize(
    "rle",
    [
        {"size": [2, 2], "counts": [3]},  # sums to 3, not 4
        {"size": [2, 2], "counts": [5, -1]},  # negative run
        {"size": [2, 2]},  # no counts
        {"size": [2], "counts": [2]},  # size is not (H, W)
        {"size": [2, 2], "counts": [[1, 3]]},  # nested
        {"size": [-1, 2], "counts": []},
    ],
)
def test_malformed_encodings_are_rejected(rle):
    with pytest.raises(ValueError):
        decode_rle(rle)


def test_encode_rejects_non_2d():
    with pytest.raises(ValueError):
        encode_rle(np.zeros((2, 2, 1), np.uint8))
