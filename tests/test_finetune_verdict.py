"""lib/finetune.py: the rehearsal weight, the merged catalog's roles, and the verdict's honesty."""

from __future__ import annotations

import pytest

from lib.finetune import merged_entries, paired_gain, rehearsal_weight, verdict
from lib.sources import Catalog, Entry


def per_image(path, dice: dict[str, float]):
    path.write_text("stem,dice,iou\n" + "".join(f"{s},{d},0\n" for s, d in dice.items()))
    return path


def test_rehearsal_weight_gives_the_asked_share_of_each_epoch():
    w = rehearsal_weight(0.5, n_own_train=236, n_base_train=700)
    assert w * 700 == pytest.approx(236)  # as many rehearsed frames as own ones
    assert rehearsal_weight(0.0, 236, 700) == 0.0
    with pytest.raises(ValueError, match="rehearsal_share"):
        rehearsal_weight(1.0, 236, 700)


def test_merged_catalog_trains_on_own_frames_and_the_base_training_split_only():
    def entry(stem, source):
        return Entry(stem, source, "train", "", f"{stem}.jpg", f"{stem}.png")

    base = Catalog({s: entry(s, "kvasir") for s in ("a", "b", "c")})
    own = Catalog({"clinic-x": entry("clinic-x", "clinic")})
    roles = {e.stem: e.role for e in merged_entries(base, {"a"}, own)}
    assert roles == {"a": "train", "b": "external", "c": "external", "clinic-x": "train"}


def test_paired_gain_and_a_gain_inside_the_noise_is_called_so(tmp_path):
    base = per_image(tmp_path / "b.csv", {"x": 0.80, "y": 0.90, "z": 0.70})
    tuned = per_image(tmp_path / "f.csv", {"x": 0.82, "y": 0.88, "z": 0.74})
    gain, se, n = paired_gain(base, tuned)
    assert n == 3
    assert gain == pytest.approx((0.02 - 0.02 + 0.04) / 3)
    better, sentence = verdict(0.80, 0.80 + gain, 0.0, se)
    assert better and "not a clear gain" in sentence  # +0.013 with a standard error of ~0.017
    better, sentence = verdict(0.80, 0.85, 0.0, 0.01)
    assert better and "not a clear gain" not in sentence
    better, sentence = verdict(0.85, 0.84, 0.0, 0.01)
    assert not better and "NOT better" in sentence and "keep the base model" in sentence


def test_paired_gain_refuses_different_images(tmp_path):
    with pytest.raises(ValueError, match="different images"):
        paired_gain(per_image(tmp_path / "b.csv", {"x": 0.8}), per_image(tmp_path / "f.csv", {"y": 0.8}))
