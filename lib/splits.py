"""Leakage-aware splitting: group near-duplicate frames by perceptual hash, then split by group."""

from __future__ import annotations

import cv2
import numpy as np


def perceptual_hash(rgb: np.ndarray, crop: float = 0.1, hash_side: int = 8) -> np.ndarray:
    """DCT perceptual hash of `(H, W, 3) uint8` -> `(hash_side**2,) bool`.

    `crop` trims that share of each border first: Kvasir frames share black vignettes and an
    endoscope-position thumbnail in the corner, which would make unrelated frames look alike.
    """
    h, w = rgb.shape[:2]
    dy, dx = int(h * crop), int(w * crop)
    gray = cv2.cvtColor(rgb[dy : h - dy, dx : w - dx], cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (hash_side * 4, hash_side * 4), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:hash_side, :hash_side].flatten()
    return low > np.median(low[1:])  # DC term excluded from the median: it only encodes brightness


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """`(N, B) bool` -> `(N, N) int` pairwise Hamming distances."""
    # On +-1 vectors, a dot product is (agreeing - differing) bits: no (N, N, B) intermediate.
    s = 2 * hashes.astype(np.int32) - 1
    return (hashes.shape[1] - s @ s.T) // 2


def thumbnail_signature(rgb: np.ndarray, crop: float = 0.25, side: int = 16) -> np.ndarray:
    """`(H, W, 3) uint8` -> `(side**2,) float32` zero-mean, unit-norm gray thumbnail of the centre.

    The dot product of two signatures is their correlation: near 1 for frames of the same view.
    """
    h, w = rgb.shape[:2]
    dy, dx = int(h * crop), int(w * crop)
    gray = cv2.cvtColor(rgb[dy : h - dy, dx : w - dx], cv2.COLOR_RGB2GRAY)
    t = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


def near_duplicate_pairs(
    hashes: np.ndarray, signatures: np.ndarray, max_distance: int, min_correlation: float
) -> np.ndarray:
    """`(N, N) bool`, True where two frames are near-duplicates by either signal.

    Either signal alone misses some pairs that a look confirms; wrongly joining two frames only
    makes a group larger, which costs balance but never leaks, so the signals are OR-ed.
    """
    close = (hamming_matrix(hashes) <= max_distance) | (signatures @ signatures.T >= min_correlation)
    np.fill_diagonal(close, False)
    return close


def group_near_duplicates(adjacent: np.ndarray) -> np.ndarray:
    """Connected components of the `(N, N) bool` near-duplicate graph -> `(N,) int` group ids.

    Group ids are numbered by first member, so the same inputs always give the same ids.
    """
    n = len(adjacent)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows, cols = np.nonzero(np.triu(adjacent, k=1))
    for i, j in zip(rows.tolist(), cols.tolist()):
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)])
    _, ids = np.unique(roots, return_inverse=True)
    return ids


def split_groups(groups: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Assign whole groups to splits so sizes approach `fractions`; -> {split: sorted sample indices}.

    Groups are visited in a seeded random order, largest first, each going to the split that is
    furthest below its target; no group is ever divided.
    """
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {dict(fractions)}")
    rng = np.random.default_rng(seed)
    group_ids, sizes = np.unique(groups, return_counts=True)
    order = rng.permutation(len(group_ids))
    order = order[np.argsort(-sizes[order], kind="stable")]
    names = list(fractions)
    targets = np.array([fractions[s] * len(groups) for s in names])
    counts = np.zeros(len(names))
    assigned: dict[str, list[int]] = {s: [] for s in names}
    for g in order:
        k = int(np.argmax(targets - counts))
        counts[k] += sizes[g]
        assigned[names[k]].append(group_ids[g])
    return {s: np.sort(np.flatnonzero(np.isin(groups, assigned[s]))) for s in names}


def split_csv(stems: list[str], groups: np.ndarray, indices: np.ndarray) -> str:
    """CSV text `stem,group` for the given sample indices, sorted by stem."""
    rows = sorted((stems[i], int(groups[i])) for i in indices)
    return "stem,group\n" + "".join(f"{s},{g}\n" for s, g in rows)
