"""The REST additions outside TF Serving's `/v1` namespace: the OpenAPI 3.1 document (validated; per-model
request schemas from the loaded signatures), schemathesis driving the server from that document, the model
list, and the dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import requests

from tests.inprocess import InProcessServer



CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def ext(zoo, tmp_path_factory):
    """linear (copied: the test publishes versions into it) and mlp with labels, census for a multi-input
    signature; a monitoring config so the metrics exist as in production."""
    from tests.byom_models import counter

    base, _ = zoo
    root = tmp_path_factory.mktemp("ext")
    shutil.copytree(base / "linear" / "1", root / "linear" / "1")
    counter(root / "counter" / "1")  # an input of unknown rank, signatures without inputs
    cfg = root / "models.config"
    cfg.write_text(f'''model_config_list {{
  config {{ name: "linear" base_path: "{root / 'linear'}" model_platform: "tensorflow" }}
  config {{ name: "counter" base_path: "{root / 'counter'}" model_platform: "tensorflow" }}
  config {{ name: "mlp" base_path: "{base / 'mlp'}" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
  config {{ name: "census" base_path: "{base / 'census'}" model_platform: "tensorflow" }}
}}
''')
    srv = InProcessServer([f"--model_config_file={cfg}", "--allow_version_labels_for_unavailable_models",
                           "--file_system_poll_wait_seconds=1"])
    try:
        srv.wait_ready()
        srv.root = root
        yield srv
    finally:
        srv.stop()


def _doc(srv) -> dict:
    r = requests.get(f"{srv.rest_url}/api/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    return r.json()


def test_openapi_document_is_valid_and_describes_every_route(ext):
    from openapi_spec_validator import validate

    doc = _doc(ext)
    validate(doc)  # raises on any violation of the OpenAPI 3.1 schema
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for prefix in ("/v1/models/{model_name}", "/v1/models/{model_name}/versions/{version}",
                   "/v1/models/{model_name}/labels/{label}"):
        assert "get" in paths[prefix] and "get" in paths[prefix + "/metadata"]
        for verb in ("predict", "classify", "regress"):
            assert "post" in paths[f"{prefix}:{verb}"]
    for extra in ("/healthz", "/readyz", "/api/models", "/api/openapi.json"):
        assert extra in paths
    assert {"/v1/models/linear:predict", "/v1/models/mlp:predict", "/v1/models/census:predict"} <= set(paths)


def _request_schema(doc: dict, model: str) -> dict:
    schema = doc["paths"][f"/v1/models/{model}:predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": doc["components"]}  # so the B64 $ref resolves


def test_per_model_schema_accepts_what_the_model_accepts_and_nothing_else(ext):
    doc = _doc(ext)
    mlp = jsonschema.Draft202012Validator(_request_schema(doc, "mlp"))
    good = [{"instances": [[0.5] * 10]}, {"inputs": {"x": [[0.5] * 10, [1.0] * 10]}},
            {"signature_name": "inference", "instances": [{"x": [1.0] * 10}]}]
    for body in good:
        assert mlp.is_valid(body), body
        assert requests.post(f"{ext.rest_url}/v1/models/mlp:predict", json=body).status_code == 200
    bad = [{"instances": [[0.5] * 9]}, {"instances": [["a"] * 10]}, {"inputs": {"y": [[0.5] * 10]}},
           {"instances": [[0.5] * 10], "inputs": [[0.5] * 10]}, {"signature_name": "nope", "instances": [[1.0] * 10]}]
    for body in bad:
        assert not mlp.is_valid(body), body
        assert requests.post(f"{ext.rest_url}/v1/models/mlp:predict", json=body).status_code == 400, body
    census = jsonschema.Draft202012Validator(_request_schema(doc, "census"))
    row = {"age": 30.0, "hours_per_week": 40, "education": "Bachelors"}
    assert census.is_valid({"instances": [row]})
    assert not census.is_valid({"instances": [{**row, "hours_per_week": 40.5}]})  # int64 input
    assert requests.post(f"{ext.rest_url}/v1/models/census:predict", json={"instances": [row]}).status_code == 200


def test_schemathesis_finds_no_failure(ext):
    """Property-based requests for every operation of the document (bounded: a few seconds): no 5xx, every
    status code, content type and body as documented."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis import checks

    schema = schemathesis.openapi.from_url(f"{ext.rest_url}/api/openapi.json")
    wanted = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
              checks.response_schema_conformance]
    failures, operations = [], 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1

        @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                  phases=[Phase.explicit, Phase.generate])
        @given(case=op.as_strategy())
        def run(case):
            case.call_and_validate(base_url=ext.rest_url, checks=wanted)

        try:
            run()
        except Exception as e:  # noqa: BLE001 - collect every operation's failure, then report them all
            failures.append(f"{op.label}: {str(e)[:1500]}")
    assert operations >= 20
    assert failures == []
    assert requests.get(f"{ext.rest_url}/readyz").status_code == 200  # and the server is still fine


def test_model_list_in_one_call(ext, zoo):
    text = requests.get(f"{ext.rest_url}/api/models").text
    assert str(ext.root) not in text and str(zoo[0]) not in text and "base_path" not in text  # no host paths
    before = {m["name"]: m for m in requests.get(f"{ext.rest_url}/api/models").json()["models"]}
    assert set(before) == {"linear", "mlp", "census", "counter"}
    mlp = before["mlp"]
    assert mlp["labels"] == {"stable": 1, "canary": 2}
    assert [(v["version"], v["state"]) for v in mlp["versions"]] == [(2, "AVAILABLE"), (1, "AVAILABLE")]
    assert mlp["signatures"]["serving_default"]["inputs"]["x"] == {"dtype": "DT_FLOAT", "shape": [-1, 10],
                                                                   "name": "serving_default_x:0"}
    assert set(before["census"]["signatures"]) == {"serving_default", "classify", "regress"}
    n = {v["version"]: v["requests"] for v in mlp["versions"]}
    for _ in range(3):
        requests.post(f"{ext.rest_url}/v1/models/mlp/labels/canary:predict", json={"instances": [[1.0] * 10]})
    after = {v["version"]: v["requests"] for v in
             next(m for m in requests.get(f"{ext.rest_url}/api/models").json()["models"] if m["name"] == "mlp")["versions"]}
    assert after[2] - n[2] == 3 and after[1] == n[1]


def test_extensions_can_be_turned_off(zoo):
    base, _ = zoo
    srv = InProcessServer(["--model_name=linear", f"--model_base_path={base / 'linear'}", "--rest_api_extensions=false"])
    try:
        srv.wait_ready()
        for path in ("/api/models", "/api/openapi.json", "/dashboard/"):
            r = requests.get(srv.rest_url + path)
            assert r.status_code == 404 and r.headers["content-type"].startswith("text/html"), path
        assert requests.get(srv.rest_url + "/v1/models/linear").status_code == 200
    finally:
        srv.stop()


def keep_screenshot(page, tmp_path: Path, name: str) -> None:
    """The whole page as a PNG (a real picture: over 10 kB); UPDATE_DOCS_SCREENSHOT=1 copies it to docs/."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOT"):
        shutil.copy(shot, Path(__file__).resolve().parent.parent / "docs" / name)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: `make test` installs Debian's chromium; "
                                             "this machine could not (no apt-get or no package mirror)")
def test_dashboard_in_a_real_browser(ext, tmp_path):
    from playwright.sync_api import sync_playwright

    x = [0.25 * i for i in range(1, 2)]
    want = requests.post(f"{ext.rest_url}/v1/models/linear:predict", json={"instances": [x]}).json()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{ext.rest_url}/dashboard/")
            page.wait_for_selector('[data-testid="model-mlp"]', timeout=20000)
            assert page.inner_text('[data-testid="label-mlp-stable"]') == "stable → 1"
            assert page.inner_text('[data-testid="label-mlp-canary"]') == "canary → 2"
            assert "AVAILABLE" in page.inner_text('[data-testid="version-mlp-2"]')
            # every table fits a 1280-px window; an input of unknown rank says so
            overflow = page.evaluate("""() => [...document.querySelectorAll('section.model')].filter((s) =>
                [...s.querySelectorAll('table, canvas')].some((t) => t.getBoundingClientRect().right >
                                                                     s.getBoundingClientRect().right + 1))
                .map((s) => s.dataset.testid)""")
            assert overflow == []
            summary = page.inner_text('[data-testid="try-counter/incr_counter_by"] summary')
            assert "delta: DT_FLOAT unknown rank" in summary and "null" not in summary
            # charts draw from live traffic: both versions of mlp, and the split between its labels
            stop = threading.Event()

            def traffic():
                with requests.Session() as http:
                    i = 0
                    while not stop.is_set():
                        label = "canary" if i % 4 == 0 else "stable"
                        http.post(f"{ext.rest_url}/v1/models/mlp/labels/{label}:predict",
                                  json={"instances": [[1.0] * 10]})
                        i += 1

            sender = threading.Thread(target=traffic, daemon=True)
            sender.start()
            try:
                page.wait_for_function("""() => {
                    const c = (id) => document.querySelector(`[data-testid="${id}"]`);
                    const rps = c('chart-rps-mlp'), split = c('chart-split-mlp'), lat = c('chart-latency-mlp');
                    return rps && split && lat && Number(rps.dataset.points) >= 2 && Number(rps.dataset.max) > 0
                        && rps.dataset.series === 'v1,v2' && split.dataset.series.includes('stable')
                        && split.dataset.series.includes('canary') && Number(lat.dataset.points) >= 4;
                }""", timeout=30000)
            finally:
                stop.set()
                sender.join(10)
            # the "try it" form: a real predict from the browser, the right numbers back
            page.click('[data-testid="try-linear/serving_default"] summary')  # (re-rendered: find it again)
            page.fill('[data-testid="body-linear/serving_default"]', json.dumps({"instances": [x]}))
            page.click('[data-testid="send-linear/serving_default"]')
            page.wait_for_selector('[data-testid="result-linear/serving_default"][data-status="200"]', timeout=20000)
            text = page.inner_text('[data-testid="result-linear/serving_default"]')
            got = json.loads(text.split("\n", 1)[1])
            np.testing.assert_allclose(got["predictions"], want["predictions"], rtol=1e-6)
            # a version rollover shows up without reloading the page
            refreshed = int(page.get_attribute("body", "data-refreshed") or 0)
            tmp = ext.root / "linear" / ".2.tmp"
            shutil.copytree(ext.root / "linear" / "1", tmp)
            os.rename(tmp, ext.root / "linear" / "2")
            page.wait_for_selector('[data-testid="version-linear-2"] .state-AVAILABLE', timeout=60000)
            assert int(page.get_attribute("body", "data-refreshed")) > refreshed  # same page, polled
            assert page.inner_text('[data-testid="result-linear/serving_default"]') == text  # form state kept
            keep_screenshot(page, tmp_path, "dashboard.png")
        finally:
            browser.close()


def test_history_turns_cumulative_metrics_into_rates_and_percentiles():
    """Two samples 2 s apart around 10 requests of 1 ms on v1 (label stable) and 10 of 10 ms on v2 (canary)."""
    from tfsb.server.history import History
    from tfsb.server.metrics import Metrics

    metrics = Metrics()
    h = History(metrics, period_s=2.0, keep=5)
    h.sample(now=1000.0)
    for _ in range(10):
        metrics.version_request("history-test", 1, "stable", 0.001)
        metrics.version_request("history-test", 2, "canary", 0.010)
    h.sample(now=1002.0)
    s = h.series()["models"]["history-test"]
    assert s["t"] == [1002.0]
    assert s["versions"]["1"]["rps"] == [5.0] and s["versions"]["2"]["rps"] == [5.0]
    assert 0.5 < s["versions"]["1"]["p50_ms"][0] <= 2.0 and 5.0 < s["versions"]["2"]["p99_ms"][0] <= 20.0
    assert s["labels"] == {"canary": {"rps": [5.0]}, "stable": {"rps": [5.0]}}
    h.sample(now=1004.0)  # no traffic in between: zero rate, no percentile
    s = h.series()["models"]["history-test"]
    assert s["versions"]["1"]["rps"] == [5.0, 0.0] and s["versions"]["1"]["p50_ms"] == [s["versions"]["1"]["p50_ms"][0], None]
