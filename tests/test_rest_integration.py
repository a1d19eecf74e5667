"""REST on the demo zoo: gRPC/REST parity for every demo signature, status/metadata JSON, label routes,
readiness."""

from __future__ import annotations

import shutil

import grpc
import numpy as np
import pytest
import requests
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

from tfsb.export.zoo import CLASSIFY, REGRESS, ZOO
from tfsb.wire import tensor_proto
from tests.inprocess import InProcessServer
from tests.server_util import wait_for
from tests.test_grpc_integration import input_proto, predict_request



def _jsonable(arr: np.ndarray):
    if arr.dtype.kind in "OS":
        return [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
    return arr.tolist()


def _example_json(blob: bytes) -> dict:
    import tensorflow as tf

    ex = tf.train.Example.FromString(blob)
    out = {}
    for k, f in ex.features.feature.items():
        kind = f.WhichOneof("kind")
        vals = list(getattr(f, kind).value)
        out[k] = [v.decode() for v in vals] if kind == "bytes_list" else vals
    return out


def test_grpc_and_rest_give_equal_tensors_for_every_demo_signature(demo_server, zoo):
    _, trained = zoo
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(demo_server.grpc_target))
    for name in ZOO:
        for sig, ep in trained[name].endpoints.items():
            sample = trained[name].samples[sig]
            if ep.method_name in (CLASSIFY, REGRESS):
                examples = [_example_json(b) for b in sample["inputs"]]
                body = {"signature_name": sig, "examples": examples}
                verb = "classify" if ep.method_name == CLASSIFY else "regress"
                rest = requests.post(f"{demo_server.rest_url}/v1/models/{name}/versions/1:{verb}", json=body).json()
                if verb == "classify":
                    req = classification_pb2.ClassificationRequest(input=input_proto(list(sample["inputs"])))
                    req.model_spec.name, req.model_spec.signature_name = name, sig
                    res = stub.Classify(req).result
                    grpc_results = [[[c.label, c.score] for c in cl.classes] for cl in res.classifications]
                    assert [[r[0] for r in row] for row in rest["results"]] == \
                        [[r[0] for r in row] for row in grpc_results]
                    np.testing.assert_array_equal(np.array([[r[1] for r in row] for row in rest["results"]], np.float32),
                                                  np.array([[r[1] for r in row] for row in grpc_results], np.float32))
                else:
                    req = regression_pb2.RegressionRequest(input=input_proto(list(sample["inputs"])))
                    req.model_spec.name, req.model_spec.signature_name = name, sig
                    res = stub.Regress(req).result
                    np.testing.assert_array_equal(np.array(rest["results"], np.float32),
                                                  np.array([r.value for r in res.regressions], np.float32))
                continue
            grpc_out = stub.Predict(predict_request(name, sample, sig, version=1)).outputs
            for fmt in ("inputs", "instances"):
                if fmt == "inputs":
                    payload = {k: _jsonable(v) for k, v in sample.items()}
                else:
                    n = len(next(iter(sample.values())))
                    payload = [{k: _jsonable(v)[i] for k, v in sample.items()} for i in range(n)]
                r = requests.post(f"{demo_server.rest_url}/v1/models/{name}/versions/1:predict",
                                  json={"signature_name": sig, fmt: payload})
                assert r.status_code == 200, r.text
                body = r.json()["outputs" if fmt == "inputs" else "predictions"]
                for alias, proto in grpc_out.items():
                    expected = tensor_proto.to_numpy(proto)
                    if len(grpc_out) == 1:
                        got = body
                    elif fmt == "inputs":
                        got = body[alias]
                    else:
                        got = [row[alias] for row in body]
                    got = np.array(got, dtype=expected.dtype if expected.dtype != object else object)
                    if expected.dtype == object:
                        assert got.tolist() == [v.decode() for v in expected.ravel().tolist()]
                    else:
                        np.testing.assert_array_equal(got, expected)  # bit-identical after JSON round trip


def test_status_and_metadata_json_for_each_demo_model(demo_server):
    expected_versions = {"linear": ["1"], "mlp": ["2", "1"], "multi": ["1"], "census": ["1"], "mlp_lite": ["1"]}
    for name in ZOO:
        st = requests.get(f"{demo_server.rest_url}/v1/models/{name}").json()
        assert [s["version"] for s in st["model_version_status"]] == expected_versions[name]
        assert all(s["state"] == "AVAILABLE" and s["status"]["error_code"] == "OK" for s in st["model_version_status"])
        md = requests.get(f"{demo_server.rest_url}/v1/models/{name}/metadata").json()
        assert md["model_spec"]["name"] == name and md["model_spec"]["version"] == expected_versions[name][0]
        assert set(trained_signatures(name)) <= set(md["metadata"]["signature_def"]["signature_def"])


def trained_signatures(name):
    return {"linear": ["serving_default"], "mlp": ["serving_default", "inference"],
            "multi": ["serving_default", "predict_two", "predict_three"],
            "census": ["serving_default", "classify", "regress"],
            "mlp_lite": ["serving_default"]}[name]


def test_label_routes(demo_server, zoo):
    _, trained = zoo
    x = [[0.1 * i for i in range(10)]]
    for label, key in (("stable", "mlp"), ("canary", "mlp@2")):
        r = requests.post(f"{demo_server.rest_url}/v1/models/mlp/labels/{label}:predict", json={"instances": x})
        ref = trained[key].endpoints["serving_default"].call({"x": np.array(x, np.float32)})["y"]
        np.testing.assert_allclose(np.array(r.json()["predictions"], np.float32), ref, rtol=1e-5)
        md = requests.get(f"{demo_server.rest_url}/v1/models/mlp/labels/{label}/metadata").json()
        assert md["model_spec"]["version"] == ("1" if label == "stable" else "2")


def test_readme_curl_example(demo_server):
    r = requests.post(f"{demo_server.rest_url}/v1/models/linear:predict", data=b'{"instances": [[1.0]]}')
    assert r.status_code == 200
    assert abs(r.json()["predictions"][0][0] - 3.0) < 0.3  # y ≈ 2x + 1


def test_readiness_flips_only_after_a_version_loads(zoo, tmp_path, demo_server):
    if getattr(demo_server, "external", False):
        pytest.skip("needs control of the model directory")
    base, _ = zoo
    ready_dir, empty_dir = tmp_path / "linear", tmp_path / "late"
    shutil.copytree(base / "linear" / "1", ready_dir / "1")
    empty_dir.mkdir()
    cfg = tmp_path / "models.config"
    cfg.write_text(f'model_config_list {{ config {{ name: "linear" base_path: "{ready_dir}" model_platform: "tensorflow" }}'
                   f' config {{ name: "late" base_path: "{empty_dir}" model_platform: "tensorflow" }} }}')
    srv = InProcessServer([f"--model_config_file={cfg}", "--file_system_poll_wait_seconds=1",
                           "--enable_grpc_healthcheck_service"]).wait_ready()
    try:
        assert requests.get(srv.rest_url + "/healthz").status_code == 200
        assert requests.get(srv.rest_url + "/readyz").status_code == 503  # "late" has nothing AVAILABLE
        shutil.copytree(base / "linear" / "1", tmp_path / "staging")
        (tmp_path / "staging").rename(empty_dir / "1")
        wait_for(lambda: requests.get(srv.rest_url + "/readyz").status_code == 200, what="ready after load")
        health = grpc.insecure_channel(srv.grpc_target)
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert health_pb2_grpc.HealthStub(health).Check(health_pb2.HealthCheckRequest()).status == \
            health_pb2.HealthCheckResponse.SERVING
    finally:
        assert srv.stop() == 0


def test_rest_timeout_answers_504_and_server_survives(zoo, tmp_path, demo_server):
    if getattr(demo_server, "external", False):
        pytest.skip("needs its own flags")
    base, _ = zoo
    srv = InProcessServer(["--model_name=mlp", f"--model_base_path={base}/mlp", "--rest_api_timeout_in_ms=1"])
    try:
        srv.wait_ready()
        body = {"instances": [[0.5] * 10] * 20000}  # decoding alone takes far longer than 1 ms
        r = requests.post(srv.rest_url + "/v1/models/mlp:predict", json=body)
        assert r.status_code == 504 and "error" in r.json()
        st = requests.get(srv.rest_url + "/v1/models/mlp")  # status is not subject to the timeout
        assert st.status_code == 200 and st.json()["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        srv.stop()
