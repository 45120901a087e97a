"""The one way an onnxruntime session is built and called (serving, pyfunc, export parity, benchmarks).

CPU only, `threads` intra-op threads, one inter-op thread, sequential execution, all graph
optimisations. Spinning threads burn CPU between calls, so they are off unless asked for: serving
shares a small host. No torch here: the serving container imports this module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lib.inference import RunModel
from lib.model_contract import INPUT_NAME, OUTPUT_NAME


def make_session(path: str | Path, threads: int = 1, spinning: bool = False):
    """An onnxruntime CPU InferenceSession for the graph at `path`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def session_runner(session, input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME) -> RunModel:
    """Wrap a session as a RunModel: `(1, 3, S, S) float32 -> (1, 1, S, S)` logits."""

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: x})[0]

    return run
