"""The REST additions outside TF Serving's `/v1/...` namespace (`--rest_api_extensions`, on by default): the
OpenAPI description, the model list and the dashboard's static files. Read-only GETs, answered from the worker
pool (they walk the registry and the metrics)."""

from __future__ import annotations

from importlib import resources

import orjson

from serving import __version__, catalog, openapi

_STATIC = {"index.html": b"text/html; charset=utf-8", "app.js": b"text/javascript; charset=utf-8",
           "style.css": b"text/css; charset=utf-8"}
_JSON = b"application/json"


def _static(name: str) -> bytes:
    return resources.files("serving").joinpath("dashboard", name).read_bytes()


def get(server, path: str) -> tuple[int, bytes, bytes]:
    """(HTTP status, body, content type) for a GET under /api/ or /dashboard."""
    route = path.split("?", 1)[0]
    if route == "/api/models":
        return 200, orjson.dumps(catalog.model_list(server.registry)), _JSON
    if route == "/api/openapi.json":
        return 200, orjson.dumps(openapi.document(server.registry, __version__)), _JSON
    if route in ("/dashboard", "/dashboard/"):
        return 200, _static("index.html"), _STATIC["index.html"]
    name = route.removeprefix("/dashboard/")
    if name in _STATIC:
        return 200, _static(name), _STATIC[name]
    return 404, orjson.dumps({"error": f"Not found: {route}"}), _JSON
