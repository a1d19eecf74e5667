"""The REST additions outside TF Serving's `/v1/...` namespace (`--rest_api_extensions`, on by default): the
OpenAPI description, the model list, the last minutes of traffic (for the charts), the traffic config and
its evidence (`/api/traffic`: GET, and PUT to replace it) and the dashboard's static files. Answered from the
worker pool (they walk the registry and the metrics)."""

from __future__ import annotations

import logging
from importlib import resources

import orjson

from tfsb import __version__
from tfsb.errors import FailedPreconditionError, InternalError, PermissionDeniedError, ServingError
from tfsb.server import catalog, openapi
from tfsb.server.history import History
from tfsb.server.rest_routes import Answer, error_answer
from tfsb.server.traffic import Traffic, TrafficConfig

_STATIC = {"index.html": b"text/html; charset=utf-8", "app.js": b"text/javascript; charset=utf-8",
           "style.css": b"text/css; charset=utf-8"}
_JSON = b"application/json"
TRAFFIC = "/api/traffic"
log = logging.getLogger("tfsb.server.rest")


def _static(name: str) -> bytes:
    return resources.files("tfsb.server").joinpath("dashboard", name).read_bytes()


class Extensions:
    """The routes, over the parts they read: the registry (models, signatures) and the traffic history."""

    def __init__(self, registry, history: History, traffic: Traffic | None = None):
        self.registry = registry
        self.history = history
        self.metrics = history.metrics
        self.traffic = traffic

    def get(self, path: str) -> tuple[int, bytes, bytes]:
        """(HTTP status, body, content type) for a GET under /api/ or /dashboard."""
        route = path.split("?", 1)[0]
        if route == "/api/models":
            return 200, orjson.dumps(catalog.model_list(self.registry, self.metrics, self.traffic)), _JSON
        if route == TRAFFIC and self.traffic is not None:
            return 200, orjson.dumps(self.traffic_document()), _JSON
        if route == "/api/history":
            return 200, orjson.dumps(self.history.series()), _JSON
        if route == "/api/openapi.json":
            return 200, orjson.dumps(openapi.document(self.registry, __version__)), _JSON
        if route in ("/dashboard", "/dashboard/"):
            return 200, _static("index.html"), _STATIC["index.html"]
        name = route.removeprefix("/dashboard/")
        if name in _STATIC:
            return 200, _static(name), _STATIC[name]
        return 404, orjson.dumps({"error": f"Not found: {route}"}), _JSON

    def traffic_document(self) -> dict:
        t = self.traffic
        return {"digest": t.config.digest, "source": t.source, "config": t.config.to_doc(),
                "shadow_pending": t.pending(), "readings": t.readings()}

    def put_traffic(self, body: bytes, allowed: str) -> Answer:
        """Replace the traffic config of this process (the rollout tool's step), as a config reload is allowed."""
        try:
            if self.traffic is None:
                raise FailedPreconditionError("this server has no traffic control")
            if allowed != "enabled":
                raise PermissionDeniedError(f"changing the traffic config is refused as config reloads are "
                                            f"(--model_config_reload_api={allowed})")
            self.traffic.put(TrafficConfig.parse(body, empty_ok=False), "PUT " + TRAFFIC)
        except ServingError as e:
            return error_answer(e)
        except Exception as e:  # noqa: BLE001 - a bug answers 500, never kills the server
            log.exception("PUT %s failed", TRAFFIC)
            return error_answer(InternalError(f"{type(e).__name__}: {e}"))
        return Answer(200, orjson.dumps({"digest": self.traffic.config.digest, "config": self.traffic.config.to_doc()}))
