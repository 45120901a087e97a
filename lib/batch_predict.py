"""Segment many image files: the per-batch work (one onnxruntime session), the manifest and resuming.

`Segmenter` is what Ray Data runs in each actor of `bin/predict_batch.py` (`map_batches` with a callable
class: the session is built once per actor, not per batch) and what the single-process baseline of
`bin/bench_batch.py` calls in a plain loop, so both do exactly the same work per image.

A file that cannot be read or decoded becomes a result row with status "error" and the reason; it never
stops the run. Masks come back as PNG bytes at each image's original size, so the driver writes them:
that works the same on one machine and on a cluster whose workers do not share the output disk.
"""

from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lib.decision import count_components
from lib.io import IMAGE_SUFFIXES, DecodeError, decode_image
from lib.model_contract import read_model_json
from lib.onnx_session import make_session
from lib.preprocess import prepare_input, restore_mask, sigmoid

MANIFEST_FIELDS = (
    "path",  # the input file as given (relative to the input root)
    "mask",  # the mask PNG, relative to the output folder ("" for an error row)
    "width",
    "height",
    "polyp_share",  # share of the image's pixels predicted polyp
    "components",  # connected regions (8-connectivity) in the predicted mask
    "model_version",
    "status",  # ok | error
    "error",  # the reason, for status error
)


@dataclass(frozen=True)
class InputSet:
    """The images to segment: absolute paths and the root they are named relative to."""

    root: Path
    files: list[Path]

    def name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def list_inputs(spec: str, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> InputSet:
    """A folder (searched recursively for image suffixes) or a glob pattern (every match, whatever its
    suffix: a broken file named by the user must be reported, not skipped). Sorted, so runs agree."""
    path = Path(spec)
    if path.is_dir():
        root = path.resolve()
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
    else:
        matches = sorted(Path(m).resolve() for m in glob.glob(spec, recursive=True))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise FileNotFoundError(f"{spec}: not a folder, and no file matches it as a pattern")
        root = Path(os.path.commonpath([p.parent for p in files]))
    if not files:
        raise FileNotFoundError(f"{spec}: no image files ({', '.join(suffixes)}) in this folder")
    return InputSet(root, files)


def mask_name(input_name: str) -> str:
    """`a/b/frame.jpg` -> `masks/a/b/frame.jpg.png`: the whole name is kept (frame.jpg, frame.png differ)."""
    return f"masks/{input_name}.png"


def read_manifest(path: Path) -> dict[str, dict]:
    """{input name: row} of an earlier run's manifest (the last row wins); empty when there is none."""
    if not path.is_file():
        return {}
    with open(path, newline="") as fh:
        return {row["path"]: row for row in csv.DictReader(fh)}


def done_names(manifest: dict[str, dict], out_dir: Path) -> set[str]:
    """Inputs an earlier run finished: ok rows whose mask file still exists, and error rows (a broken file
    stays broken; `--retry-errors` in bin/predict_batch.py tries them again)."""
    return {
        name
        for name, row in manifest.items()
        if row["status"] == "error" or (row["status"] == "ok" and (out_dir / row["mask"]).is_file())
    }


class ManifestWriter:
    """Appends rows to the manifest CSV and flushes each batch: an interrupted run keeps what it finished."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fresh = not path.is_file() or path.stat().st_size == 0
        self._fh = open(path, "a", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=MANIFEST_FIELDS)
        if fresh:
            self._writer.writeheader()

    def write(self, rows: list[dict]) -> None:
        self._writer.writerows({k: row.get(k, "") for k in MANIFEST_FIELDS} for row in rows)
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def encode_mask_png(mask: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
    if not ok:
        raise RuntimeError("PNG encoding of a mask failed")
    return buf.tobytes()


class Segmenter:
    """One onnxruntime session; `__call__` maps a batch `{"path": [...], "name": [...]}` to result columns.

    A model with a dynamic batch axis (models/model_dynamic.onnx) runs each batch in one call; one with a
    fixed batch of 1 runs image by image. Thresholds and normalisation come from the model.json beside
    the model, as in serving.
    """

    def __init__(self, model_path: str, threads: int = 1, max_pixels: int = 50_000_000):
        model_path = Path(model_path)
        self.meta = read_model_json(model_path.with_name("model.json"))
        self.session = make_session(model_path, threads)
        self.max_pixels = max_pixels
        batch_dim = self.session.get_inputs()[0].shape[0]
        self.batched = not (isinstance(batch_dim, int) and batch_dim == 1)

    def _run(self, x: np.ndarray) -> np.ndarray:
        m = self.meta
        if self.batched:
            return self.session.run([m.output_name], {m.input_name: x})[0]
        return np.concatenate(
            [self.session.run([m.output_name], {m.input_name: x[i : i + 1]})[0] for i in range(len(x))]
        )

    def _decode(self, path: str) -> np.ndarray:
        data = Path(path).read_bytes()
        if not data:
            raise DecodeError("empty file")
        rgb = decode_image(data)
        if rgb.shape[0] * rgb.shape[1] > self.max_pixels:
            raise DecodeError(
                f"{rgb.shape[1]}x{rgb.shape[0]} pixels is more than max_pixels={self.max_pixels}"
            )
        return rgb

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        m = self.meta
        rows, inputs, geometries, ok_rows = [], [], [], []
        for path, name in zip(batch["path"], batch["name"]):
            row = {"path": str(name), "model_version": m.model_version, "mask_png": b""}
            try:
                rgb = self._decode(str(path))
            except (OSError, DecodeError) as err:
                row.update(status="error", error=f"{type(err).__name__}: {err}")
            else:
                x, geometry = prepare_input(rgb, m.input_size, m.mean, m.std)
                inputs.append(x)
                geometries.append(geometry)
                ok_rows.append(row)
            rows.append(row)
        if inputs:
            logits = self._run(np.concatenate(inputs))
            for row, geometry, logit in zip(ok_rows, geometries, logits):
                prob = restore_mask(sigmoid(logit[0]), geometry)
                mask = m.mask(prob).astype(np.uint8)  # as /predict makes it
                row.update(
                    status="ok",
                    error="",
                    mask=mask_name(row["path"]),
                    mask_png=encode_mask_png(mask),
                    width=geometry.width,
                    height=geometry.height,
                    polyp_share=round(float(mask.mean()), 6),
                    components=count_components(mask),
                )
        columns = (
            "path",
            "mask",
            "width",
            "height",
            "polyp_share",
            "components",
            "model_version",
            "status",
            "error",
        )
        out = {k: np.array([row.get(k, "") for row in rows], dtype=object) for k in columns}
        out["mask_png"] = np.array([row["mask_png"] for row in rows], dtype=object)
        return out


def write_results(batch: dict[str, np.ndarray], out_dir: Path) -> list[dict]:
    """Write a result batch's mask PNGs under `out_dir`; return its manifest rows."""
    rows = []
    for i in range(len(batch["path"])):
        row = {k: batch[k][i] for k in MANIFEST_FIELDS}
        if row["status"] == "ok":
            target = out_dir / row["mask"]
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".part")
            tmp.write_bytes(batch["mask_png"][i])
            tmp.replace(target)  # a mask file either is whole or is not there: resuming trusts it
        rows.append(row)
    return rows
