"""polypseg serving API (see serve/README.md). NOT FOR CLINICAL USE."""

import os

# onnxruntime's Linux builds now upload usage telemetry and persist a device id by default; a
# service handling medical images opts out before onnxruntime starts (set it to 0 to opt back in).
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
