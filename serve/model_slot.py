"""The model behind the API as the endpoints see it: loaded in the background, or why not."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

import falcon

from serve.predictor import ModelError, Predictor

model_log = logging.getLogger("polypseg.model")

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[^\s'\"():,/]+/)+([^\s'\"():,/]+)")


def public_error(message: str) -> str:
    """`message` with absolute filesystem paths cut to their file name: clients see no server layout."""
    return ABSOLUTE_PATH.sub(r"\1", message)


class ModelSlot:
    """The current predictor, or why there is none.

    With a `loader`, loading happens in a background thread, retried every `retry_s` seconds until it
    succeeds: a registry that is down or slow never blocks the worker's boot, /healthz or a request,
    and never crashes the worker (every exception is caught and shown, paths removed, at /readyz).
    """

    def __init__(self, predictor: Predictor | None, loader: Callable[[], Predictor] | None, retry_s: float):
        self.predictor = predictor
        self.error = "" if predictor or loader else "no model configured"
        self._loader = loader
        self._retry_s = max(retry_s, 0.05)  # 0 in tests: retry at once, without spinning a core
        self._wake = threading.Event()
        self.first_attempt = threading.Event()  # set once the first load has succeeded or failed
        if predictor is None and loader is not None:
            self.error = "the model is loading"
            threading.Thread(target=self._load_until_loaded, name="model-loader", daemon=True).start()

    def get(self) -> Predictor | None:
        return self.predictor

    def wait_first_attempt(self, timeout: float) -> None:
        """Block up to `timeout` seconds for the first load attempt to end, whatever its outcome."""
        if self._loader is not None and self.predictor is None:
            self.first_attempt.wait(timeout)

    def _load_until_loaded(self) -> None:
        while self.predictor is None:
            try:
                self.predictor = self._loader()
            except Exception as err:  # noqa: BLE001 - whatever the loader raises, the worker stays up
                self.error = public_error(str(err) or type(err).__name__)[:500]
                model_log.error(
                    "model not loaded",
                    exc_info=not isinstance(err, ModelError),  # a bug in loading: keep its traceback
                    extra={"fields": {"error": str(err)[:2000], "retry_s": self._retry_s}},
                )
                self.first_attempt.set()
                self._wake.wait(self._retry_s)
                continue
            self.error = ""
            self.first_attempt.set()
            model_log.info("model loaded", extra={"fields": {"model_version": self.predictor.meta.version}})

    @property
    def version(self) -> str:
        return self.predictor.meta.version if self.predictor else "none"


def require_model(slot: ModelSlot) -> Predictor:
    predictor = slot.get()
    if predictor is None:
        raise falcon.HTTPServiceUnavailable(
            title="Model not loaded", description=slot.error or "no model loaded", retry_after=30
        )
    return predictor
