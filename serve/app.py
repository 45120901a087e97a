"""The polyp segmentation API (Falcon WSGI). NOT FOR CLINICAL USE.

`create_app(predictor, settings)` wires resources around a given predictor (tests pass a tiny
real ONNX model); `get_app()` builds the real one from environment variables and is what
gunicorn runs: `gunicorn -c serve/gunicorn.conf.py 'serve.app:get_app()'`.
"""

from __future__ import annotations

from collections.abc import Callable

import falcon

from serve.inflight import InflightLedger, ledger_dir
from serve.logs import configure_logging
from serve.metrics import metrics_for_process
from serve.model_slot import ModelSlot
from serve.observe import RequestObserver, handle_unexpected, serialize_error
from serve.predict import PredictResource
from serve.predictor import Predictor, load_predictor
from serve.resources import (
    HealthResource,
    MetricsResource,
    ModelMetadataResource,
    ReadyResource,
    StaticResource,
    VersionResource,
)
from serve.settings import Settings, load_settings


def create_app(
    predictor: Predictor | None,
    settings: Settings | None = None,
    loader: Callable[[], Predictor] | None = None,
    boot_wait_s: float = 0.0,
) -> falcon.App:
    """The API around `predictor`.

    With `predictor` None the model endpoints answer 503; a `loader` is then run in a background
    thread at once and again every `settings.model_retry_s` seconds until it returns a predictor;
    the app is returned once the first attempt has ended, or after `boot_wait_s` seconds at most.
    """
    settings = settings or Settings()
    slot = ModelSlot(predictor, loader, settings.model_retry_s)
    slot.wait_first_attempt(boot_wait_s)
    metrics = metrics_for_process()
    ledger = InflightLedger(ledger_dir()) if ledger_dir() else None
    app = falcon.App(middleware=[RequestObserver(slot, metrics, ledger)])
    app.req_options.strip_url_path_trailing_slash = True
    app.set_error_serializer(serialize_error)
    app.add_error_handler(Exception, handle_unexpected)
    static = StaticResource()
    app.add_route("/", static)
    app.add_route("/static/{name}", static, suffix="asset")
    app.add_route("/predict", PredictResource(slot, settings, metrics))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(slot))
    app.add_route("/version", VersionResource(slot))
    metadata = ModelMetadataResource(slot)
    app.add_route("/v2/models/{name}", metadata)
    app.add_route("/v2/models/{name}/versions/{version}", metadata, suffix="version")
    app.add_route("/metrics", MetricsResource(metrics, settings.metrics_allow))
    return app


def get_app() -> falcon.App:
    """The production app, configured from the environment; an unloadable model means 503s, not a crash."""
    settings = load_settings()
    configure_logging(settings.log_level)

    def loader() -> Predictor:
        return load_predictor(
            settings.model_path,
            settings.model_uri,
            settings.allow_staging,
            settings.ort_threads,
            settings.registry_timeout_s,
        )

    # A worker starts accepting requests when this returns. Wait for a local model (a second or so),
    # so a new or restarted worker never answers 503 beside ready ones; a registry load is remote
    # and may hang, so there the worker comes up at once and answers 503 until its model is in.
    boot_wait_s = 0.0 if settings.model_uri else settings.boot_wait_s
    return create_app(None, settings, loader=loader, boot_wait_s=boot_wait_s)
