"""Progressive delivery end to end against a real server (issue 27): shadow traffic and its evidence, the
weighted-split label for plain clients, and `tfsb-client rollout` — a biased canary fails the output gate and
is rolled back, a slow one fails the latency gate, a good one is promoted — with no failed client request."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import requests

from tests import canary_models
from tests.inprocess import run_main
from tests.server_util import Background, serving, wait_for

X = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
BASE_TRAFFIC = {"models": {"lin": {"split": {"label": "rollout", "weights": {"stable": 100}}}}}


def _config(base) -> str:
    return f'''model_config_list {{
  config {{
    name: "lin"
    base_path: "{base}"
    model_platform: "tensorflow"
    model_version_policy {{ specific {{ versions: 1 versions: 2 versions: 3 versions: 4 }} }}
    version_labels {{ key: "stable" value: 1 }}
  }}
}}
'''


@pytest.fixture(scope="module")
def canary_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("canary")
    base = canary_models.publish(tmp / "models", "lin", {1: {}, 2: {}, 3: {"bias": 0.5}, 4: {"slow": 60}})
    (tmp / "models.config").write_text(_config(base))
    (tmp / "traffic.json").write_text(json.dumps(BASE_TRAFFIC))
    with serving([f"--model_config_file={tmp / 'models.config'}", f"--traffic_config_file={tmp / 'traffic.json'}",
                  "--allow_version_labels_for_unavailable_models=true", "--traffic_config_poll_seconds=1"]) as srv:
        srv.tmp = tmp
        wait_for(lambda: len(requests.get(f"{srv.rest_url}/v1/models/lin", timeout=5).json()["model_version_status"])
                 == 4 and all(s["state"] == "AVAILABLE" for s in requests.get(
                     f"{srv.rest_url}/v1/models/lin", timeout=5).json()["model_version_status"]),
                 timeout=120, what="four versions of lin")
        yield srv


def _set_traffic(srv, doc: dict) -> None:
    """The file the server re-reads and the config in force say the same (else the file's next poll wins)."""
    (srv.tmp / "traffic.json").write_text(json.dumps(doc))
    requests.put(f"{srv.rest_url}/api/traffic", data=json.dumps(doc), timeout=5).raise_for_status()


def _reset(srv) -> None:
    (srv.tmp / "models.config").write_text(_config(srv.tmp / "models" / "lin"))
    from tfsb.client import GrpcClient
    from tfsb.client.rollout import read_config

    with GrpcClient(srv.grpc_target, retries=0) as c:
        c.reload_config(read_config(srv.tmp / "models.config"))
    _set_traffic(srv, BASE_TRAFFIC)


class _Load(Background):
    """Plain clients during a rollout: REST predicts naming the baseline label and the split label, gRPC
    predicts naming the baseline label. Counts versions per label and every failure."""

    def __init__(self, srv):
        super().__init__()
        self.srv = srv
        self.versions: dict[str, Counter] = {"stable": Counter(), "rollout": Counter()}
        self.failures: list[str] = []
        for label in ("stable", "rollout"):
            self.spawn(self._rest, label)
        self.spawn(self._grpc)

    def _rest(self, label: str) -> None:
        s = requests.Session()
        body = json.dumps({"instances": X.tolist()})
        while not self.stopping(0.005):
            try:
                r = s.post(f"{self.srv.rest_url}/v1/models/lin/labels/{label}:predict", data=body, timeout=30)
                if r.status_code != 200:
                    self.failures.append(f"REST {label}: {r.status_code} {r.text[:200]}")
                else:
                    self.versions[label][int(r.headers["x-tf-serving-model-version"])] += 1
            except requests.RequestException as e:
                self.failures.append(f"REST {label}: {e}")

    def _grpc(self) -> None:
        from tfsb.client import GrpcClient
        from tfsb.client.base import ServingClientError

        with GrpcClient(self.srv.grpc_target, retries=0) as c:
            while not self.stopping(0.005):
                try:
                    c.predict("lin", {"x": X}, label="stable", timeout=30)
                except ServingClientError as e:
                    self.failures.append(f"gRPC: {e}")


def _rollout(srv, version: int, tmp_path, *extra: str):
    evidence = tmp_path / "evidence.json"
    r = run_main("tfsb.client", ["--grpc-target", srv.grpc_target, "--rest-url", srv.rest_url, "rollout", "lin",
                                 "--to", str(version), "--config", str(srv.tmp / "models.config"),
                                 "--traffic-file", str(srv.tmp / "traffic.json"), "--shadow-fraction", "1",
                                 "--steps", "50,100", "--hold", "20", "--hold-requests", "40",
                                 "--evidence", str(evidence), *extra])
    print(r.stdout)
    return r, json.loads(evidence.read_text()) if evidence.exists() else None


def _labels(srv) -> dict:
    return {m["name"]: m for m in requests.get(f"{srv.rest_url}/api/models", timeout=5).json()["models"]}["lin"][
        "labels"]


def _traffic(srv) -> dict:
    return requests.get(f"{srv.rest_url}/api/traffic", timeout=5).json()


def test_a_biased_canary_fails_the_output_gate_and_is_rolled_back(canary_server, tmp_path):
    srv = canary_server
    _reset(srv)
    with _Load(srv) as load:
        r, ev = _rollout(srv, 3, tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert ev["result"] == "rolled back" and ev["baseline"] == 1
    shadow = ev["steps"][0]
    assert shadow["step"] == "shadow" and not shadow["passed"]
    assert any("outputs differ" in g for g in shadow["failed_gates"]), shadow
    assert float(shadow["evidence"]["shadow"]["3"]["max_abs_diff"]) >= 0.5
    assert len(ev["steps"]) == 1  # no weighted step ran
    assert _labels(srv) == {"stable": 1}  # the canary label the tool added is gone again
    assert _traffic(srv)["config"] == BASE_TRAFFIC
    assert json.loads((srv.tmp / "traffic.json").read_text())["models"]["lin"]["split"]["weights"] == {"stable": 100}
    assert load.failures == [], load.failures[:5]
    assert set(load.versions["stable"]) == {1} and set(load.versions["rollout"]) == {1}


def test_a_slow_canary_fails_the_latency_gate(canary_server, tmp_path):
    srv = canary_server
    _reset(srv)
    with _Load(srv) as load:
        r, ev = _rollout(srv, 4, tmp_path, "--hold-requests", "25", "--max-p99-ratio", "10")
    assert r.returncode == 3, r.stdout + r.stderr
    failed = ev["steps"][-1]
    assert not failed["passed"] and any("p99" in g for g in failed["failed_gates"]), failed
    assert not any("outputs differ" in g for g in failed["failed_gates"])  # same answers, only slower
    assert _labels(srv) == {"stable": 1}
    assert load.failures == [], load.failures[:5]


def test_a_good_canary_is_promoted(canary_server, tmp_path):
    srv = canary_server
    _reset(srv)
    with _Load(srv) as load:
        r, ev = _rollout(srv, 2, tmp_path, "--max-p99-ratio", "10")  # a p99 of ~100 samples is noisy
        after = sum(load.versions["stable"].values())
        wait_for(lambda: sum(load.versions["stable"].values()) > after + 10, timeout=30, what="answers after promote")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ev["result"] == "promoted" and [s["step"] for s in ev["steps"]] == ["shadow", "50%", "100%"]
    assert all(s["passed"] for s in ev["steps"])
    assert ev["steps"][0]["evidence"]["shadow"]["2"]["max_abs_diff"] == 0.0
    assert ev["steps"][-1]["evidence"]["live"]["2"]["requests"] >= 40  # the split label's requests reached it
    assert _labels(srv)["stable"] == 2
    assert load.versions["rollout"][2] > 0 and load.failures == [], load.failures[:5]
    assert _traffic(srv)["config"]["models"]["lin"]["split"]["weights"] == {"stable": 100.0}


def test_the_split_label_spreads_plain_requests_by_weight(canary_server):
    srv = canary_server
    _reset(srv)
    from tfsb.client import GrpcClient
    from tfsb.client.rollout import read_config, set_labels

    with GrpcClient(srv.grpc_target, retries=0) as c:
        set_labels(srv.tmp / "models.config", c, "lin", {"canary": 2})
    doc = {"models": {"lin": {"split": {"label": "rollout", "weights": {"stable": 70, "canary": 30}}}}}
    _set_traffic(srv, doc)
    s = requests.Session()
    seen = Counter(int(s.post(f"{srv.rest_url}/v1/models/lin/labels/rollout:predict",
                              data=json.dumps({"instances": X.tolist()}), timeout=10).headers[
        "x-tf-serving-model-version"]) for _ in range(300))
    assert set(seen) == {1, 2} and 0.15 < seen[2] / 300 < 0.45, seen
    # metadata by the split label resolves too (clients look signatures up by the label they predict with)
    assert s.get(f"{srv.rest_url}/v1/models/lin/labels/rollout/metadata", timeout=5).status_code == 200
    # a label the models.config defines keeps TF Serving's meaning, even when named as the split label
    doc["models"]["lin"]["split"]["label"] = "canary"
    doc["models"]["lin"]["split"]["weights"] = {"stable": 100}
    _set_traffic(srv, doc)
    got = {int(s.post(f"{srv.rest_url}/v1/models/lin/labels/canary:predict",
                      data=json.dumps({"instances": X.tolist()}), timeout=10).headers["x-tf-serving-model-version"])
           for _ in range(20)}
    assert got == {2}
    with GrpcClient(srv.grpc_target, retries=0) as c:
        c.reload_config(read_config(srv.tmp / "models.config"))


def test_a_bad_traffic_config_is_refused_and_the_one_in_force_kept(canary_server):
    srv = canary_server
    _reset(srv)
    before = _traffic(srv)["digest"]
    for body, needle in ((b"{not json", "not JSON"), (b"", "is empty"), (b"  \n", "is empty"),
                         (b'{"models": {"lin": {"shadow": {"to": "canary", "fraction": 2}}}}', "fraction"),
                         (b'{"models": {"lin": {"split": {"label": "x", "weights": {"stable": 0}}}}}', "all be 0"),
                         (b'{"models": {"lin": {"split": {"label": "7", "weights": {"stable": 1}}}}}', "non-numeric")):
        r = requests.put(f"{srv.rest_url}/api/traffic", data=body, timeout=5)
        assert r.status_code == 400 and needle in r.json()["error"], (body, r.text)
    (srv.tmp / "traffic.json").write_text("{broken")  # a bad edit of the file: logged, the config in force kept
    wait_for(lambda: "not applied" in srv.log_text(), timeout=10, what="the refused file edit in the log")
    assert _traffic(srv)["digest"] == before
    _set_traffic(srv, BASE_TRAFFIC)


def test_dry_run_changes_nothing(canary_server, tmp_path):
    srv = canary_server
    _reset(srv)
    before = (srv.tmp / "models.config").read_text(), _traffic(srv)["digest"]
    r, ev = _rollout(srv, 2, tmp_path, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert ev["result"] == "dry run" and [s["step"] for s in ev["steps"]] == ["shadow", "50%", "100%"]
    assert ev["steps"][1]["traffic"]["split"]["weights"] == {"stable": 50, "canary": 50}
    assert ((srv.tmp / "models.config").read_text(), _traffic(srv)["digest"]) == before


def test_the_dashboard_shows_the_canary_evidence(canary_server, tmp_path):
    from tests.test_dashboard import CHROMIUM, keep_screenshot

    if CHROMIUM is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium; this machine could not")
    from playwright.sync_api import sync_playwright

    from tfsb.client import GrpcClient
    from tfsb.client.rollout import set_labels

    srv = canary_server
    _reset(srv)
    with GrpcClient(srv.grpc_target, retries=0) as c:
        set_labels(srv.tmp / "models.config", c, "lin", {"canary": 3})  # the biased one: a visible difference
    doc = {"models": {"lin": {"shadow": {"to": "canary", "fraction": 0.5},
                              "split": {"label": "rollout", "weights": {"stable": 80, "canary": 20}}}}}
    _set_traffic(srv, doc)
    with _Load(srv) as load, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{srv.rest_url}/dashboard/")
            page.wait_for_selector('[data-testid="canary-lin-shadow-3"]', timeout=20000)
            page.wait_for_function("""() => {
                const c = (id) => document.querySelector(`[data-testid="${id}"]`);
                const lat = c('chart-canary-latency-lin'), diff = c('chart-canary-diff-lin');
                return lat && diff && Number(lat.dataset.points) >= 6 && Number(diff.dataset.points) >= 2
                    && lat.dataset.series.includes('shadow v3') && lat.dataset.series.includes('live v1');
            }""", timeout=30000)
            overflow = page.evaluate("""() => [...document.querySelectorAll('section.model')].filter((s) =>
                [...s.querySelectorAll('table, canvas')].some((t) => t.getBoundingClientRect().right >
                                                                     s.getBoundingClientRect().right + 1))
                .map((s) => s.dataset.testid)""")
            assert overflow == []
            assert "shadow" in page.inner_text('[data-testid="canary-lin"] p')  # the config in force is shown
            row = page.inner_text('[data-testid="canary-lin-shadow-3"]')
            assert "1" in row.split("\t")[-2]  # the bound of the largest difference: 1 (a 0.5 bias)
            page.wait_for_timeout(4000)  # a few more chart points for the picture
            keep_screenshot(page, tmp_path, "canary.png")
        finally:
            browser.close()
    assert load.failures == [], load.failures[:5]


def test_an_interrupted_rollout_rolls_back(canary_server):
    """Ctrl-C mid-rollout (here: after the shadow step) leaves no half-moved label or weight behind."""
    from tfsb.client import GrpcClient, canary

    srv = canary_server
    _reset(srv)

    def interrupt(step):
        raise KeyboardInterrupt

    with GrpcClient(srv.grpc_target, retries=0) as c, _Load(srv) as load:
        out = canary.run(canary.Plan("lin", 2, shadow_fraction=1.0, steps=(50, 100), hold_s=1.0),
                         str(srv.tmp / "models.config"), [canary.Server(c, srv.rest_url)],
                         traffic_file=str(srv.tmp / "traffic.json"), on_step=interrupt, log=lambda s: None)
    assert out.result == "rolled back" and out.reason == "interrupted" and len(out.steps) == 1
    assert _labels(srv) == {"stable": 1}
    assert _traffic(srv)["config"] == BASE_TRAFFIC
    assert json.loads((srv.tmp / "traffic.json").read_text()) == BASE_TRAFFIC
    assert load.failures == [], load.failures[:5]


def test_classify_and_regress_are_mirrored_over_both_transports(zoo, tmp_path):
    """Shadow traffic covers the tf.Example APIs: classify is compared by top class (agreement), regress by
    value; gRPC and REST requests alike. The canary here is the same model published again."""
    import shutil

    from tfsb.client import GrpcClient

    base = tmp_path / "census"
    for v in ("1", "2"):
        shutil.copytree(zoo[0] / "census" / "1", base / v)
    cfg = tmp_path / "models.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "census" base_path: "{base}" model_platform: "tensorflow" '
                   'model_version_policy { specific { versions: 1 versions: 2 } } } }\n')
    (tmp_path / "traffic.json").write_text('{"models": {"census": {"shadow": {"to": 2, "fraction": 1}}}}')
    rows = [{"age": [0.3 * i], "education": ["Bachelors"], "hours_per_week": [40]} for i in range(4)]
    with serving([f"--model_config_file={cfg}", f"--traffic_config_file={tmp_path / 'traffic.json'}"]) as srv:
        with GrpcClient(srv.grpc_target, retries=0) as c:
            for _ in range(5):
                c.classify("census", rows, signature="classify", version=1)
                c.regress("census", rows, signature="regress", version=1)
        for verb in ("classify", "regress"):
            for _ in range(5):
                r = requests.post(f"{srv.rest_url}/v1/models/census/versions/1:{verb}",
                                  json={"signature_name": verb, "examples": rows}, timeout=10)
                assert r.status_code == 200, r.text

        def shadow():
            m = {m["name"]: m for m in requests.get(f"{srv.rest_url}/api/models", timeout=5).json()["models"]}
            return m["census"]["traffic"]["evidence"].get("shadow", {}).get("2", {})

        wait_for(lambda: shadow().get("requests") == 20, timeout=30, what="20 mirrored calls")
        ev = shadow()
        assert ev["errors"] == 0 and ev["agreement"] == 1.0 and ev["max_abs_diff"] == 0.0, ev
        live = requests.get(f"{srv.rest_url}/api/traffic", timeout=5).json()["readings"]["census"]["live"]["1"]
        assert live["requests"] == 20
