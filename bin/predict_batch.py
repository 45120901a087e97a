#!/usr/bin/env python3
"""Segment a folder (or glob) of images on Ray Data: one mask PNG per image and a manifest CSV.

Ray starts a local instance on this machine; RAY_ADDRESS (or `ray_address` in the conf) points the same
code at a cluster. Each actor holds one onnxruntime session (lib/batch_predict.py Segmenter); masks come
back to this process, which writes them and the manifest, so a re-run skips what is done. A file that
cannot be decoded is a manifest row with status "error", never a crash; exit status 1 says how many failed.

Usage: bin/predict_batch.py --conf conf/predict_batch.yaml --input DIR_OR_GLOB --output DIR [--retry-errors]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from lib.batch_predict import ManifestWriter, done_names, list_inputs, read_manifest, write_results
from lib.cli import parser, script
from lib.config import load_config
from lib.ray_batch import PredictBatchConfig, segment_on_ray, start_ray


@script("predict_batch")
def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0], "conf/predict_batch.yaml")
    p.add_argument("--input", required=True, help="folder of images (recursive) or a glob pattern")
    p.add_argument("--output", required=True, help="folder for masks/ and the manifest")
    p.add_argument("--retry-errors", action="store_true", help="try the error rows of an earlier run again")
    args = p.parse_args(argv)
    cfg = load_config(PredictBatchConfig, args.conf, args.overrides)
    cfg.check(args.conf)
    if not Path(cfg.model).is_file():
        raise FileNotFoundError(f"model {cfg.model} not found (make export writes it)")

    inputs = list_inputs(args.input)
    names = [inputs.name(f) for f in inputs.files]
    out_dir = Path(args.output)
    manifest_path = out_dir / cfg.manifest
    earlier = read_manifest(manifest_path)
    done = done_names(earlier, out_dir)
    if args.retry_errors:
        done = {n for n in done if earlier[n]["status"] == "ok"}
    todo = [{"path": str(f), "name": n} for f, n in zip(inputs.files, names) if n not in done]
    print(
        f"predict_batch: {len(names)} images under {inputs.root}; {len(names) - len(todo)} done "
        f"in an earlier run, {len(todo)} to do -> {out_dir}"
    )

    t0 = time.perf_counter()
    if todo:
        ray = start_ray(cfg)
        writer, finished, failed_now = ManifestWriter(manifest_path), 0, 0
        try:
            for batch in segment_on_ray(ray, cfg, todo):
                rows = write_results(batch, out_dir)
                writer.write(rows)
                failed_now += sum(r["status"] == "error" for r in rows)
                before, finished = finished, finished + len(rows)
                if finished // cfg.progress_every > before // cfg.progress_every or finished == len(todo):
                    rate = finished / (time.perf_counter() - t0)
                    print(
                        f"predict_batch: {finished}/{len(todo)} images, {failed_now} failed, "
                        f"{rate:.1f} images/s",
                        flush=True,
                    )
        finally:
            writer.close()
            ray.shutdown()

    manifest = read_manifest(manifest_path)
    rows = [manifest[n] for n in names if n in manifest]
    failed = [r for r in rows if r["status"] == "error"]
    print(
        f"predict_batch: {manifest_path}: {len(rows) - len(failed)} ok, {len(failed)} error, "
        f"{len(names) - len(rows)} missing ({time.perf_counter() - t0:.1f} s this run)"
    )
    for row in failed[:10]:
        print(f"  error: {row['path']}: {row['error']}", file=sys.stderr)
    if failed or len(rows) < len(names):
        print(
            f"predict_batch: {len(failed)} of {len(names)} images failed (status error in the manifest)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
