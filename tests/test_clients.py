"""Clients against a live server: symmetric results, one exception type, labels, A/B, big messages, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tfsb.client import GrpcClient, RestClient, ServingClientError, make_input
from tfsb.client.ab import ABRouter, parse_weights
from tfsb.client.rollout import read_config, set_labels, promote
from tfsb.export.zoo import CLASSIFY, REGRESS, ZOO
from tests.conftest import REPO
from tests.inprocess import InProcessServer, run_command, run_main, run_python
from tests.server_util import wait_for



@pytest.fixture(scope="module")
def clients(demo_server):
    g, r = GrpcClient(demo_server.grpc_target), RestClient(demo_server.rest_url)
    yield g, r
    g.close()
    r.close()


def _rows(sample_inputs: np.ndarray) -> list[dict]:
    import tensorflow as tf

    out = []
    for blob in sample_inputs:
        ex = tf.train.Example.FromString(blob)
        row = {}
        for k, f in ex.features.feature.items():
            kind = f.WhichOneof("kind")
            vals = list(getattr(f, kind).value)
            row[k] = vals[0]
        out.append(row)
    return out


def test_every_demo_signature_gives_equal_results_over_both_clients(clients, zoo):
    g, r = clients
    _, trained = zoo
    for name in ZOO:
        for sig, ep in trained[name].endpoints.items():
            sample = trained[name].samples[sig]
            if ep.method_name in (CLASSIFY, REGRESS):
                rows = _rows(sample["inputs"])
                verb = "classify" if ep.method_name == CLASSIFY else "regress"
                a = getattr(g, verb)(name, rows, signature=sig, version=1)
                b = getattr(r, verb)(name, rows, signature=sig, version=1)
                if verb == "classify":
                    assert [[lbl for lbl, _ in row] for row in a] == [[lbl for lbl, _ in row] for row in b]
                    np.testing.assert_array_equal(np.float32([[s for _, s in row] for row in a]),
                                                  np.float32([[s for _, s in row] for row in b]))
                else:
                    assert a.dtype == b.dtype == np.float32
                    np.testing.assert_array_equal(a, b)
                continue
            for rc in (r, RestClient(r.base_url, row=True)):
                a = g.predict(name, sample, signature=sig, version=1)
                b = rc.predict(name, sample, signature=sig, version=1)
                assert a.keys() == b.keys()
                for k in a:
                    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
                    np.testing.assert_array_equal(a[k], b[k])


def test_single_array_input_and_output_filter(clients):
    g, r = clients
    x = np.ones((2, 10), np.float32)
    a, b = g.predict("mlp", x), r.predict("mlp", x)
    np.testing.assert_array_equal(a["y"], b["y"])
    inputs = {"age": [30.0], "hours_per_week": [40], "education": ["Masters"]}  # plain lists: signature dtypes
    for c in (g, r):
        out = c.predict("census", inputs, output_filter=["class_ids"])
        assert list(out) == ["class_ids"] and out["class_ids"].dtype == np.int64


def test_multi_inference_and_context(clients):
    g, r = clients
    rows = [{"age": 39.0, "hours_per_week": 40, "education": "HS-grad"}, {"age": 60.0, "hours_per_week": 60,
                                                                          "education": "Doctorate"}]
    tasks = [("classify", "classify"), ("regress", "regress")]
    a, b = g.multi_inference("census", rows, tasks), r.multi_inference("census", rows, tasks)
    np.testing.assert_array_equal(a[1], b[1])
    assert [[x[0] for x in row] for row in a[0]] == [["<=50K", ">50K"]] * 2
    ctx = {"hours_per_week": 40, "education": "HS-grad"}
    for c in (g, r):
        v = c.regress("census", [{"age": 39.0}], signature="regress", context=ctx)
        np.testing.assert_allclose(v, a[1][:1], rtol=1e-6)
    inp = make_input(rows)
    np.testing.assert_array_equal(g.regress("census", inp, signature="regress"), a[1])


@pytest.mark.parametrize("call,code,http,message", [
    (lambda c: c.predict("nope", {"x": np.ones((1, 1), np.float32)}), "NOT_FOUND", 404,
     "Servable not found for request: Latest(nope)"),
    (lambda c: c.predict("mlp", {"x": np.ones((1, 10), np.float32)}, version=9), "NOT_FOUND", 404,
     "Servable not found for request: Specific(mlp, 9)"),
    (lambda c: c.predict("mlp", {"x": np.ones((1, 10), np.float32)}, label="beta"), "INVALID_ARGUMENT", 400,
     "Unrecognized servable version label: beta"),
    (lambda c: c.status("nope"), "NOT_FOUND", 404, "Could not find any versions of model nope"),
    (lambda c: c.metadata("nope"), "NOT_FOUND", 404, "Servable not found for request: Latest(nope)"),
])
def test_errors_raise_one_exception_type_with_the_right_code(clients, call, code, http, message):
    for c in clients:
        with pytest.raises(ServingClientError) as e:
            call(c)
        assert (e.value.code, e.value.http_status, e.value.message) == (code, http, message)


def test_status_and_metadata_agree(clients):
    g, r = clients
    for name in ZOO:
        assert g.status(name) == r.status(name)
        assert g.metadata(name) == r.metadata(name)


def test_fifty_megabyte_request_over_grpc(clients):
    g, _ = clients
    x = np.random.default_rng(0).random((1_310_720, 10), dtype=np.float32)  # 50 MiB of float32
    assert x.nbytes >= 50 * 1024 * 1024
    limit = int(os.environ.get("TFS_MAX_BATCH_SIZE", "0"))
    if limit:  # a batching server (the compose stack: max_batch_size 64) refuses it, as TF Serving does
        with pytest.raises(ServingClientError) as e:
            g.predict("mlp", {"x": x}, timeout=120)
        assert e.value.code == "INVALID_ARGUMENT"
        assert f"Task size 1310720 is larger than maximum input batch size {limit}" in e.value.message
        x = x[:limit]
    out = g.predict("mlp", {"x": x}, timeout=120)
    assert out["y"].shape == (len(x), 1)


def test_grpc_retries_only_on_unavailable():
    from tests.server_util import free_port

    c = GrpcClient(f"127.0.0.1:{free_port()}", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ServingClientError) as e:
        c.status("mlp")
    assert e.value.code == "UNAVAILABLE"


def test_ab_router_weights_and_stickiness(clients):
    g, _ = clients
    router = ABRouter(parse_weights("stable=90,canary=10"))
    x = {"x": np.ones((1, 10), np.float32)}
    seen: dict[str, str] = {}
    for i in range(2000):
        key = f"user-{i}"
        label, _ = router.predict(g, "mlp", x, key)
        seen[key] = label
    rep = router.report()
    assert abs(rep["stable"]["share"] - 0.9) < 0.03 and abs(rep["canary"]["share"] - 0.1) < 0.03
    assert rep["stable"]["errors"] == rep["canary"]["errors"] == 0
    assert all(router.label_for(k) == v for k, v in seen.items())  # sticky per key
    assert len({router.label_for("user-42") for _ in range(50)}) == 1
    assert rep["stable"]["weight"] == 0.9 and rep["canary"]["weight"] == 0.1
    assert rep["stable"]["versions"] == {"1": rep["stable"]["count"]}  # which version answered each label
    assert rep["canary"]["versions"] == {"2": rep["canary"]["count"]}


def test_both_clients_report_the_version_that_answered(clients, demo_server):
    """gRPC answers carry the version; over REST the embedded server names it in a response header (the
    official image does not send it: the REST client then reports None)."""
    import requests

    from tfsb.wire.status import VERSION_HEADER

    g, r = clients
    official = "tensorflow/serving" in os.environ.get("TFS_IMAGE", "")
    x = {"x": np.ones((1, 10), np.float32)}
    for c in (g, r):
        for label, want in (("stable", 1), ("canary", 2), (None, 2)):
            out, served = c.predict_versioned("mlp", x, label=label)
            expected = None if official and c is r else want
            assert out["y"].shape == (1, 1) and served == expected, (type(c).__name__, label, served)
    if not official:
        ans = requests.post(f"{r.base_url}/v1/models/mlp/labels/stable:predict", json={"instances": [[1.0] * 10]})
        assert ans.headers[VERSION_HEADER] == "1"


@pytest.fixture
def rollout_server(zoo, tmp_path):
    base, _ = zoo
    models = tmp_path / "models"
    shutil.copytree(base / "mlp", models / "mlp")
    cfg = tmp_path / "models.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "mlp" base_path: "{models}/mlp" model_platform: "tensorflow" '
                   'model_version_policy { specific { versions: 1 } } } }')
    srv = InProcessServer([f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=1"])
    srv.config = cfg
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_label_set_and_promote_switch_traffic_without_failures(rollout_server):
    srv = rollout_server
    g = GrpcClient(srv.grpc_target)
    failures, versions = [], []
    stop = threading.Event()
    x = {"x": np.ones((1, 10), np.float32)}

    def traffic():
        c = GrpcClient(srv.grpc_target)
        while not stop.is_set():
            try:
                c.predict("mlp", x, label="stable")
                versions.append(c.metadata("mlp", label="stable")["version"])
            except ServingClientError as e:
                if "Unrecognized servable version label" not in e.message:  # before the first label exists
                    failures.append(e)

    set_labels(srv.config, g, "mlp", {"stable": 1})
    t = threading.Thread(target=traffic)
    t.start()
    try:
        # canary=2 needs version 2 loaded first: the tool adds it to the policy, waits, then labels it
        new = set_labels(srv.config, g, "mlp", {"canary": 2})
        assert new == {"stable": 1, "canary": 2}
        assert list(read_config(srv.config).model_config_list.config[0].model_version_policy.specific.versions) == [1, 2]
        assert g.metadata("mlp", label="canary")["version"] == 2
        assert promote(srv.config, g, "mlp", "canary", "stable") == {"stable": 2, "canary": 2}
        wait_for(lambda: versions and versions[-1] == 2, what="traffic on the promoted version")
    finally:
        stop.set()
        t.join()
    assert failures == []
    assert 1 in versions and 2 in versions


def test_label_on_a_missing_version_is_refused_and_the_config_rolled_back(rollout_server):
    srv = rollout_server
    before = srv.config.read_text()
    t0 = time.monotonic()
    out = _cli("--grpc-target", srv.grpc_target, "label", "set", "mlp", "stable=9", "--config", str(srv.config))
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "version 9 of mlp was not found" in out.stderr and "publish it first" in out.stderr, out.stderr[-800:]
    assert "previous config was restored" in out.stderr
    assert time.monotonic() - t0 < 60  # not the 120 s wait
    assert srv.config.read_text() == before
    g = GrpcClient(srv.grpc_target)
    wait_for(lambda: {s["version"] for s in g.status("mlp") if s["state"] == "AVAILABLE"} == {1}, 30,
             what="the restored config served")
    latest = _cli("--grpc-target", srv.grpc_target, "label", "set", "mlp", "canary=x", "--config", str(srv.config))
    assert latest.returncode != 0 and "Traceback" not in latest.stderr and "LABEL=VERSION" in latest.stderr


def _cli(*args):
    """`python -m tfsb.client ...` in-process (the in-process tier); `_cli_process` for the entry point itself."""
    return run_main("tfsb.client", list(args), cwd=REPO)


def _cli_process(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "tfsb.client", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_json_outputs_parse(demo_server):
    g, r = ["--grpc-target", demo_server.grpc_target], ["--rest", "--rest-url", demo_server.rest_url]
    for proto in (g, r):
        out = _cli(*proto, "--json", "predict", "linear", "--input", '{"x": [[1.0], [2.0]]}')
        assert out.returncode == 0, out.stderr[-2000:]
        assert np.array(json.loads(out.stdout)["y"]).shape == (2, 1)
        st = json.loads(_cli(*proto, "--json", "status", "mlp").stdout)
        assert [s["version"] for s in st] == [2, 1]
        md = json.loads(_cli(*proto, "--json", "metadata", "census").stdout)
        assert set(md["signature_def"]) == {"serving_default", "classify", "regress"}
        cl = json.loads(_cli(*proto, "--json", "classify", "census", "--signature", "classify", "--examples",
                             '[{"age": 39.0, "hours_per_week": 40, "education": "Bachelors"}]').stdout)
        assert [c[0] for c in cl[0]] == ["<=50K", ">50K"]
    err = _cli_process(*g, "--json", "predict", "nope", "--input", '{"x": [[1.0]]}')  # the real entry point
    assert err.returncode == 1 and json.loads(err.stdout)["code"] == "NOT_FOUND"
    ab = _cli(*g, "--json", "ab", "--model", "mlp", "--weights", "stable=50,canary=50", "--requests", "200")
    rep = json.loads(ab.stdout)
    assert rep["stable"]["count"] + rep["canary"]["count"] == 200 and rep["stable"]["errors"] == 0


def test_cli_npy_input_and_human_table(demo_server, tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 10), np.float32))
    out = _cli("--grpc-target", demo_server.grpc_target, "predict", "mlp", "--npy", str(tmp_path / "x.npy"))
    assert out.returncode == 0 and "y  float32  shape=[3, 1]" in out.stdout
    md = _cli("--grpc-target", demo_server.grpc_target, "metadata", "multi")
    assert "predict_three" in md.stdout and "DT_FLOAT" in md.stdout


def test_bench_reports_percentiles_and_json(demo_server, tmp_path):
    out = tmp_path / "bench.json"
    r = run_main("tfsb.client.bench", ["--target", demo_server.grpc_target, "--model", "mlp", "--concurrency", "2",
                                   "--duration", "2", "--json-out", str(out)], cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["errors"] == 0 and res["requests"] > 0 and res["p50_ms"] <= res["p99_ms"]
    assert res["rows_per_s"] == res["rps"]


def _doc_section(title: str, page: str = "docs/clients.md") -> str:
    text = (REPO / page).read_text()
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def test_readme_client_examples_run_as_written(demo_server):
    """Every curl / CLI / Python example of "Calling the models" (docs/clients.md) and of the README's common
    tasks, pointed at the test server's ports."""
    import re

    section = _doc_section("Calling the models") + _doc_section("Common tasks", "README.md")
    rest_port = demo_server.rest_url.rsplit(":", 1)[1]
    grpc_target = demo_server.grpc_target
    commands = [line for block in re.findall(r"```sh\n(.*?)```", section, re.S) for line in block.splitlines()
                if line.strip()]
    assert len(commands) >= 19
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    for cmd in commands:
        cmd = cmd.replace("localhost:8501", f"127.0.0.1:{rest_port}")
        if cmd.startswith("curl"):
            cmd = cmd.replace("curl ", "curl -sf ", 1)
        else:
            cmd = cmd.replace("python -m tfsb.client", f"{sys.executable} -m tfsb.client --grpc-target {grpc_target} "
                                                   f"--rest-url http://127.0.0.1:{rest_port}", 1)
        r = run_command(cmd, cwd=REPO, env=env)  # `python -m tfsb.client ...` in-process, curl in a shell
        assert r.returncode == 0, f"{cmd}\n{r.stdout[-1000:]}\n{r.stderr[-2000:]}"
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    code = code.replace('"localhost:8500"', f'"{grpc_target}"').replace("localhost:8501", f"127.0.0.1:{rest_port}")
    r = run_python(code, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("NOT_FOUND 404 Servable not found for request: Specific(mlp, 99)") == 2


def _scale_model(path, dtype, factor, output="y"):
    """output = x * factor as `dtype`: a model of the user's own, not from the demo zoo."""
    import tensorflow as tf

    class M(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {output: tf.cast(x * factor, dtype)}

    m = M()
    tmp = path.parent / f".incoming-{path.name}"
    tf.saved_model.save(m, str(tmp), signatures={"serving_default": m.serve})
    tmp.rename(path)


def test_rest_client_follows_a_version_change_of_output_dtype(tmp_path):
    """Cached output dtypes must not outlive the version they came from (int64 v2 → float32 v3)."""
    import tensorflow as tf

    base = tmp_path / "scale"
    base.mkdir()
    _scale_model(base / "2", tf.int64, 1.0)
    srv = InProcessServer(["--model_name=scale", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"])
    try:
        srv.wait_ready()
        rest, grpc_c = RestClient(srv.rest_url), GrpcClient(srv.grpc_target)
        for c in (rest, RestClient(srv.rest_url, row=True)):
            out = c.predict("scale", {"x": np.array([1.0, 2.0], np.float32)})["y"]
            assert out.dtype == np.int64 and out.tolist() == [1, 2]
        _scale_model(base / "3", tf.float32, 1.25)
        wait_for(lambda: any(s["version"] == 3 and s["state"] == "AVAILABLE" for s in grpc_c.status("scale")),
                 timeout=60, what="version 3")
        wait_for(lambda: not any(s["version"] == 2 and s["state"] == "AVAILABLE" for s in grpc_c.status("scale")),
                 timeout=60, what="version 2 unloaded")
        expected = grpc_c.predict("scale", {"x": np.array([1.0, 2.0], np.float32)})["y"]
        assert expected.tolist() == [1.25, 2.5]
        out = rest.predict("scale", {"x": np.array([1.0, 2.0], np.float32)})["y"]
        assert out.dtype == np.float32 and out.tolist() == [1.25, 2.5]
        _scale_model(base / "4", tf.float64, 2.0, output="z")  # the output is renamed
        wait_for(lambda: not any(s["version"] == 3 and s["state"] == "AVAILABLE" for s in grpc_c.status("scale")),
                 timeout=60, what="version 3 unloaded")
        # a renamed single output cannot be seen in a REST answer (it carries no name): the cached signature
        # of `latest` is re-read after metadata_ttl
        rest.metadata_ttl = 0.0
        out = rest.predict("scale", {"x": np.array([1.0, 2.0], np.float32)})
        assert list(out) == ["z"] and out["z"].dtype == np.float64 and out["z"].tolist() == [2.0, 4.0]
    finally:
        srv.stop()


def test_rest_client_sends_object_arrays_of_str(demo_server):
    """What a pandas string column gives: numpy object arrays of Python str, accepted like the gRPC client."""
    rest, g = RestClient(demo_server.rest_url), GrpcClient(demo_server.grpc_target)
    inputs = {"age": np.array([39.0], np.float32), "hours_per_week": np.array([40], np.int64),
              "education": np.array(["Bachelors"], dtype=object)}
    got = rest.predict("census", inputs)
    want = g.predict("census", inputs)
    assert sorted(got) == sorted(want)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)


def test_ab_cli_reports_failures_and_accepts_inputs_over_both_protocols(demo_server):
    g, r = ["--grpc-target", demo_server.grpc_target], ["--rest", "--rest-url", demo_server.rest_url]
    x = '{"x": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}'
    for proto in (g, r):
        ok = _cli(*proto, "ab", "--model", "mlp", "--requests", "40", "--input", x, "--signature", "inference")
        assert ok.returncode == 0, ok.stderr[-2000:]
        assert "stable" in ok.stdout and "errors=0" in ok.stdout
    bad = _cli(*g, "ab", "--model", "mlp", "--requests", "40", "--weights", "stable=50,nosuch=50")
    assert bad.returncode == 1
    assert "request(s) failed" in bad.stderr and "Unrecognized servable version label: nosuch" in bad.stderr
    assert "Traceback" not in bad.stderr and "p50=nan" not in bad.stdout
    malformed = _cli(*g, "ab", "--model", "mlp", "--input", "{not json")
    assert malformed.returncode == 2 and "not valid JSON" in malformed.stderr and "Traceback" not in malformed.stderr
    helptext = _cli("ab", "--help").stdout
    for opt in ("--model", "--weights", "--signature", "--input", "--requests", "--users", "--seed"):
        assert opt in helptext
