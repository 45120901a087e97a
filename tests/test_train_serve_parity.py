"""Train/serve preprocessing parity: the training cache holds exactly the pixels serving feeds the model.

bin/preprocess.py builds data/processed with lib/preprocess.py `cache_pair`, which resizes with the
function `prepare_input` uses. The cache stores uint8 arrays in .npy files (lossless, no JPEG/PNG
re-encoding), so the comparison is exact: tolerance 0, for the pixels and for the normalised tensor.
"""

from __future__ import annotations

import numpy as np
import pytest
from bin_helpers import ROOT, load_bin, write_catalog

from lib.data import SegmentationDataset, load_cache
from lib.io import read_image, read_mask
from lib.model import normalisation
from lib.preprocess import normalise, prepare_input, resize_mask


@pytest.fixture(scope="module")
def cache(real_samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("processed")
    catalog = write_catalog(real_samples, out / "catalog")[0]
    args = ["--conf", str(ROOT / "conf/preprocess.yaml"), "--set", f"catalog={catalog}"]
    assert load_bin("preprocess").main([*args, "--set", f"out_dir={out}"]) == 0
    return out


@pytest.mark.parametrize("encoder", ["tu-tf_efficientnet_lite0", "resnet34"])  # both normalisations
def test_cached_sample_equals_prepare_input_of_the_raw_image(real_samples, cache, encoder):
    images, masks, rows = load_cache(cache)
    size = images.shape[1]
    mean, std = normalisation(encoder)
    dataset = SegmentationDataset(images, masks, list(rows.values()), mean, std)  # no augmentation
    assert len(rows) == 16
    for i, (stem, row) in enumerate(rows.items()):
        rgb = read_image(real_samples / "images" / f"{stem}.jpg")
        assert rgb.shape[:2] != (size, size)  # the resize is exercised, not skipped
        served, _ = prepare_input(rgb, size, mean, std)
        np.testing.assert_array_equal(normalise(images[row], mean, std), served[0])
        np.testing.assert_array_equal(dataset[i][0].numpy(), served[0])  # what training feeds the model


def test_cached_mask_is_the_evaluation_mask_resized(real_samples, cache):
    _, masks, rows = load_cache(cache)
    for stem, row in rows.items():
        label = read_mask(real_samples / "masks" / f"{stem}.jpg")  # what evaluation scores against
        np.testing.assert_array_equal(masks[row], resize_mask(label, masks.shape[1]))
