"""The REST additions outside TF Serving's `/v1/...` namespace (`--rest_api_extensions`, on by default): the
OpenAPI description, the model list, the last minutes of traffic (for the charts) and the dashboard's static
files. Read-only GETs, answered from the worker
pool (they walk the registry and the metrics)."""

from __future__ import annotations

from importlib import resources

import orjson

from tfsb import __version__
from tfsb.server import catalog, openapi
from tfsb.server.history import History

_STATIC = {"index.html": b"text/html; charset=utf-8", "app.js": b"text/javascript; charset=utf-8",
           "style.css": b"text/css; charset=utf-8"}
_JSON = b"application/json"


def _static(name: str) -> bytes:
    return resources.files("tfsb.server").joinpath("dashboard", name).read_bytes()


class Extensions:
    """The routes, over the parts they read: the registry (models, signatures) and the traffic history."""

    def __init__(self, registry, history: History):
        self.registry = registry
        self.history = history
        self.metrics = history.metrics

    def get(self, path: str) -> tuple[int, bytes, bytes]:
        """(HTTP status, body, content type) for a GET under /api/ or /dashboard."""
        route = path.split("?", 1)[0]
        if route == "/api/models":
            return 200, orjson.dumps(catalog.model_list(self.registry, self.metrics)), _JSON
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
