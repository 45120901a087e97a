"""lib.memory: a gunicorn worker reuses its freed request buffers instead of faulting them back in."""

import sys

import pytest

from lib.decision import Decision
from lib.memory import keep_freed_memory
from tests.support.harness import Gunicorn, sample_image_bytes
from tests.support.loadgen import run_load
from tests.support.tinymodel import write_tiny_model

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt, /proc")


@linux_only
def test_glibc_takes_the_thresholds():
    assert keep_freed_memory()


@linux_only
@pytest.mark.integration
def test_a_worker_does_not_fault_its_buffers_in_on_every_request(tmp_path):
    # Without the pinned thresholds this worker took ~750 minor faults a request on this 622x529 frame
    # (3 MB of pages mapped afresh each time; 1,500-1,900 on a 1348x1070 one); with them, under one.
    model = write_tiny_model(
        tmp_path / "model", size=256, decision=Decision(0.5, 0.0, "t", min_component_ratio=0.5)
    )
    jpeg = sample_image_bytes()
    with Gunicorn(model, workers=1, env={"POLYPSEG_ORT_THREADS": "1"}) as server:
        run_load(server.port, jpeg, concurrency=1, requests=10)  # the heap reaches its working size
        before = server.minor_page_faults()
        row = run_load(server.port, jpeg, concurrency=1, requests=30)
        per_request = (server.minor_page_faults() - before) / 30
    assert row["errors"] == 0
    assert per_request < 50, per_request
