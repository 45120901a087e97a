"""polypseg serving API (see serve/README.md). NOT FOR CLINICAL USE."""

import os

from serve.settings import Settings

# onnxruntime's Linux builds now upload usage telemetry and persist a device id by default; a
# service handling medical images opts out before onnxruntime starts (set it to 0 to opt back in).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# The decoder's own memory bound, behind serve/imagecheck.py's header checks: OpenCV refuses to decode
# an image whose width x height, as the codec itself parsed it (libjpeg's jpeg_read_header, libpng's
# IHDR), exceeds OPENCV_IO_MAX_IMAGE_PIXELS, before allocating anything. OpenCV reads the variable once,
# when cv2 is loaded, so it is set here, before anything under serve/ imports cv2 (as under gunicorn).
_max_pixels = os.environ.get("POLYPSEG_MAX_PIXELS", "").strip()
os.environ.setdefault(
    "OPENCV_IO_MAX_IMAGE_PIXELS", _max_pixels if _max_pixels.isdigit() else str(Settings.max_pixels)
)
