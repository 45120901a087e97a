"""Shadow mode: keep a copy of each request's input and output for later review.

Opt-in (POLYPSEG_SHADOW_DIR). Layout: `DIR/YYYY-MM-DD/<UTC time>_<request id>_<random>/` holding
`input.jpg|png` (the image as received, without bytes appended after its end), `mask.png` (0/255 at
the original size) and `record.json`. The images may be patient data, so:

- everything is private to the service user: folders 0700, files 0600, whatever the umask;
- one request stores at most `max_request_bytes` of image (a larger one keeps only its record, with
  `"input_stored": false`), and the whole directory at most `max_total_bytes`: when a write would
  pass the cap the oldest request folders are deleted first (`prune`), so the newest data survives;
- nothing here encrypts or ships the data: the directory needs the protection of the source images.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIR_MODE, FILE_MODE = 0o700, 0o600
RESCAN_S = 60.0  # other workers write to the same directory: re-measure it this often


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    # O_CREAT's mode is masked by the umask; the file must not be readable by others.
    os.chmod(path, FILE_MODE)


def _mkdir_private(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, exist_ok=True)
    os.chmod(path, DIR_MODE)


def folder_bytes(folder: Path) -> int:
    total = 0
    for entry in folder.rglob("*"):
        try:
            if entry.is_file():
                total += entry.stat().st_size
        except OSError:
            continue  # pruned by another worker meanwhile
    return total


@dataclass
class Saved:
    folder: Path | None  # None when nothing could be written
    bytes_written: int
    input_stored: bool
    pruned: int  # request folders deleted to stay under the total cap


class ShadowStore:
    """Writes request folders under `root` within a per-request and a total byte cap."""

    def __init__(self, root: str | Path, max_request_bytes: int, max_total_bytes: int):
        self.root = Path(root)
        self.max_request_bytes = max_request_bytes
        self.max_total_bytes = max_total_bytes
        self._lock = threading.Lock()
        self._total = -1  # bytes under root as last measured plus what this process wrote since
        self._measured_at = 0.0

    def _folders_oldest_first(self) -> list[Path]:
        # Day folders and request folders both sort by time: YYYY-MM-DD / HHMMSSmmm_...
        folders = []
        for day in sorted(p for p in self.root.iterdir() if p.is_dir()):
            folders.extend(sorted(p for p in day.iterdir() if p.is_dir()))
        return folders

    def _measure(self) -> None:
        self._total = folder_bytes(self.root) if self.root.exists() else 0
        self._measured_at = time.monotonic()

    def prune(self, incoming: int) -> int:
        """Delete the oldest request folders until `incoming` more bytes fit under the total cap."""
        pruned = 0
        if self._total + incoming <= self.max_total_bytes:
            return 0
        target = max(0, int(self.max_total_bytes * 0.9) - incoming)  # some headroom: no prune per request
        for folder in self._folders_oldest_first():
            if self._total <= target:
                break
            size = folder_bytes(folder)
            shutil.rmtree(folder, ignore_errors=True)
            self._total -= size
            pruned += 1
            try:
                folder.parent.rmdir()  # an emptied day folder
            except OSError:
                pass
        return pruned

    def save(
        self, request_id: str, image: bytes, image_format: str, mask_png: bytes, record: dict[str, Any]
    ) -> Saved:
        """Write one request's files into a new private folder; raises OSError on a disk error.

        `request_id` must already be sanitised (letters, digits, `.`, `_`, `-`, `:`); the random suffix
        keeps two requests with the same id, or two workers, from overwriting each other.
        """
        input_stored = len(image) <= self.max_request_bytes
        record = {**record, "input_stored": input_stored, "input_bytes": len(image)}
        record_bytes = (json.dumps(record, indent=2) + "\n").encode()
        size = (len(image) if input_stored else 0) + len(mask_png) + len(record_bytes)
        with self._lock:
            if self._total < 0 or time.monotonic() - self._measured_at > RESCAN_S:
                _mkdir_private(self.root)
                self._measure()
            pruned = self.prune(size)
            if self._total + size > self.max_total_bytes:
                return Saved(None, 0, False, pruned)  # a single request larger than the whole cap
            self._total += size
        now = time.time()
        day = self.root / time.strftime("%Y-%m-%d", time.gmtime(now))
        stamp = time.strftime("%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
        folder = day / f"{stamp}_{request_id.replace(':', '-')[:64]}_{uuid.uuid4().hex[:8]}"
        _mkdir_private(day)
        folder.mkdir(mode=DIR_MODE)
        os.chmod(folder, DIR_MODE)  # as in _mkdir_private: mkdir's mode is masked by the umask
        if input_stored:
            _write_private(folder / f"input.{'jpg' if image_format == 'jpeg' else 'png'}", image)
        _write_private(folder / "mask.png", mask_png)
        # Written last and atomically: a folder with record.json is complete.
        tmp = folder / ".record.json.tmp"
        _write_private(tmp, record_bytes)
        os.replace(tmp, folder / "record.json")
        return Saved(folder, size, input_stored, pruned)
