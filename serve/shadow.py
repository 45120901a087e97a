"""Shadow mode: keep a copy of each request's input and output for later review.

Opt-in (POLYPSEG_SHADOW_DIR). Layout: `DIR/YYYY-MM-DD/<UTC time>_<request id>_<random>/` holding
`input.jpg|png` (the bytes as received), `mask.png` (0/255 at the original size) and
`record.json`. The images may be patient data: the directory needs the same protection as the
source images, and nothing here prunes it.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any


def save_shadow(
    root: str | Path,
    request_id: str,
    image: bytes,
    image_format: str,
    mask_png: bytes,
    record: dict[str, Any],
) -> Path:
    """Write one request's files into a new folder under `root`; returns that folder.

    `request_id` must already be sanitised (letters, digits, `.`, `_`, `-`, `:`); the random suffix
    keeps two requests with the same id, or two workers, from overwriting each other.
    """
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.gmtime(now))
    stamp = time.strftime("%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    safe_id = request_id.replace(":", "-")[:64]
    folder = Path(root) / day / f"{stamp}_{safe_id}_{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True, exist_ok=False)
    suffix = "jpg" if image_format == "jpeg" else "png"
    (folder / f"input.{suffix}").write_bytes(image)
    (folder / "mask.png").write_bytes(mask_png)
    # Written last and atomically: a folder with record.json is complete.
    tmp = folder / ".record.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, folder / "record.json")
    return folder
