"""gRPC API against a real `python -m tfsb.server` process, through the official tensorflow_serving stubs."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)
from tensorflow_serving.config import model_server_config_pb2

from tfsb.export.zoo import CLASSIFY, REGRESS, ZOO, census_examples
from tfsb.wire import tensor_proto
from tests.inprocess import InProcessServer
from tests.server_util import ServerProcess, wait_for



@pytest.fixture(scope="module")
def stubs(demo_server):
    ch = grpc.insecure_channel(demo_server.grpc_target, options=[("grpc.max_send_message_length", -1),
                                                                 ("grpc.max_receive_message_length", -1)])
    yield prediction_service_pb2_grpc.PredictionServiceStub(ch), model_service_pb2_grpc.ModelServiceStub(ch)
    ch.close()


def predict_request(model: str, inputs: dict, signature: str = "", version=None, label=None):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    req.model_spec.signature_name = signature
    if version is not None:
        req.model_spec.version.value = version
    if label is not None:
        req.model_spec.version_label = label
    for k, v in inputs.items():
        tensor_proto.from_numpy(np.asarray(v), into=req.inputs[k])
    return req


def input_proto(examples: list[bytes]):
    req = classification_pb2.ClassificationRequest()
    for b in examples:
        req.input.example_list.examples.add().ParseFromString(b)
    return req.input


def rpc_error(fn, *args) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        fn(*args)
    return e.value


def test_every_demo_signature_matches_in_process_results(stubs, zoo):
    predict, _ = stubs
    base, trained = zoo
    for name in ZOO:
        tm = trained[name]
        # a TFLite conversion is compared with the Keras model it came from (float ops may be reordered)
        loaded = None if tm.tflite else tf.saved_model.load(str(base / name / "1"))
        rtol = 1e-4 if tm.tflite else 1e-6
        for sig, ep in tm.endpoints.items():
            sample = tm.samples[sig]
            expected = ep.call(sample) if loaded is None else \
                {k: v.numpy() for k, v in loaded.signatures[sig](**{k: tf.constant(v) for k, v in sample.items()}).items()}
            if ep.method_name in (CLASSIFY, REGRESS):
                inp = input_proto(list(sample["inputs"]))
                if ep.method_name == CLASSIFY:
                    req = classification_pb2.ClassificationRequest(input=inp)
                    req.model_spec.name, req.model_spec.signature_name = name, sig
                    resp = predict.Classify(req)
                    scores = [[c.score for c in cl.classes] for cl in resp.result.classifications]
                    labels = [[c.label.encode() for c in cl.classes] for cl in resp.result.classifications]
                    np.testing.assert_allclose(scores, expected["scores"], rtol=1e-6)
                    assert labels == expected["classes"].tolist()
                else:
                    req = regression_pb2.RegressionRequest(input=inp)
                    req.model_spec.name, req.model_spec.signature_name = name, sig
                    resp = predict.Regress(req)
                    np.testing.assert_allclose([r.value for r in resp.result.regressions], expected["outputs"],
                                               rtol=1e-6)
                assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == \
                    (name, 1, sig)
                continue
            resp = predict.Predict(predict_request(name, sample, sig, version=1))
            assert set(resp.outputs) == set(expected)
            for k, v in expected.items():
                got = tensor_proto.to_numpy(resp.outputs[k])
                assert got.dtype == v.dtype and got.shape == v.shape
                np.testing.assert_allclose(got, v, rtol=rtol) if v.dtype != object else \
                    np.testing.assert_array_equal(got, v)
            assert resp.model_spec.signature_name == sig and resp.model_spec.version.value == 1


def test_default_signature_and_latest_version(stubs):
    predict, _ = stubs
    resp = predict.Predict(predict_request("mlp", {"x": np.ones((2, 10), np.float32)}))
    assert resp.model_spec.signature_name == "serving_default" and resp.model_spec.version.value == 2
    assert tensor_proto.to_numpy(resp.outputs["y"]).shape == (2, 1)


def test_output_filter(stubs):
    predict, _ = stubs
    req = predict_request("census", {"age": np.array([30.0], np.float32), "hours_per_week": np.array([40]),
                                     "education": np.array([b"Masters"], object)})
    req.output_filter.append("class_ids")
    resp = predict.Predict(req)
    assert list(resp.outputs) == ["class_ids"]
    req.output_filter.append("class_ids")
    e = rpc_error(predict.Predict, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details() == "duplicate output tensor alias: class_ids"
    del req.output_filter[:]
    req.output_filter.append("nope")
    e = rpc_error(predict.Predict, req)
    assert e.details() == ("output tensor alias not found in signature: nope Outputs expected to be in the set "
                           "{class_ids,probabilities}.")


def test_labels_route_to_their_versions(stubs, zoo):
    predict, _ = stubs
    _, trained = zoo
    x = np.random.default_rng(0).random((2, 10), dtype=np.float32)
    for label, version, key in (("stable", 1, "mlp"), ("canary", 2, "mlp@2")):
        resp = predict.Predict(predict_request("mlp", {"x": x}, label=label))
        assert resp.model_spec.version.value == version
        ref = trained[key].endpoints["serving_default"].call({"x": x})["y"]
        np.testing.assert_allclose(tensor_proto.to_numpy(resp.outputs["y"]), ref, rtol=1e-5)


def test_multi_inference(stubs):
    predict, _ = stubs
    req = inference_pb2.MultiInferenceRequest()
    req.input.CopyFrom(input_proto(census_examples([39.0, 60.0], [40, 60], [b"HS-grad", b"Doctorate"])))
    for sig, method in (("classify", CLASSIFY), ("regress", REGRESS)):
        t = req.tasks.add(method_name=method)
        t.model_spec.name, t.model_spec.signature_name = "census", sig
    resp = predict.MultiInference(req)
    cls, reg = resp.results
    assert cls.model_spec.signature_name == "classify" and cls.model_spec.version.value == 1
    np.testing.assert_allclose([c.classes[1].score for c in cls.classification_result.classifications],
                               [r.value for r in reg.regression_result.regressions], rtol=1e-6)
    t = req.tasks.add(method_name="tensorflow/serving/predict")
    t.model_spec.name, t.model_spec.signature_name = "census", "serving_default"
    e = rpc_error(predict.MultiInference, req)
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.details() == "Unsupported signature method_name: tensorflow/serving/predict"
    req.tasks[2].model_spec.name = "mlp"
    e = rpc_error(predict.MultiInference, req)
    assert e.details() == "All ModelSpecs in a MultiInferenceRequest must access the same model name."


def test_metadata_lists_signatures(stubs):
    predict, _ = stubs
    sigdefs = {}
    for name in ZOO:
        req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        req.model_spec.name = name
        resp = predict.GetModelMetadata(req)
        sdm = get_model_metadata_pb2.SignatureDefMap()
        resp.metadata["signature_def"].Unpack(sdm)
        sigdefs[name] = sdm.signature_def
        assert {k for k in sdm.signature_def if not k.startswith("__")} == _expected_signatures(name)
        assert resp.model_spec.name == name and resp.model_spec.version.value >= 1
    assert sigdefs["census"]["classify"].method_name == CLASSIFY
    assert sigdefs["census"]["regress"].inputs["inputs"].dtype == tensor_proto.DT.DT_STRING
    req = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["other"])
    req.model_spec.name = "mlp"
    assert rpc_error(predict.GetModelMetadata, req).details() == "Metadata field other is not supported"
    req = get_model_metadata_pb2.GetModelMetadataRequest()
    req.model_spec.name = "mlp"
    assert rpc_error(predict.GetModelMetadata, req).details() == \
        "GetModelMetadataRequest must specify at least one metadata_field"


def _expected_signatures(name: str) -> set[str]:
    return {"linear": {"serving_default"}, "mlp": {"serving_default", "inference"},
            "multi": {"serving_default", "predict_two", "predict_three"},
            "census": {"serving_default", "classify", "regress"},
            "mlp_lite": {"serving_default"}}[name]


def test_status_shows_the_policys_versions(stubs):
    _, models = stubs
    def status(name, version=None):
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = name
        if version is not None:
            req.model_spec.version.value = version
        return [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_code)
                for s in models.GetModelStatus(req).model_version_status]

    assert status("mlp") == [(2, "AVAILABLE", 0), (1, "AVAILABLE", 0)]  # specific {1, 2}, newest first
    assert status("linear") == [(1, "AVAILABLE", 0)]
    assert status("mlp", 1) == [(1, "AVAILABLE", 0)]
    e = rpc_error(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest(
        model_spec={"name": "nope"}))
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope")
    req = get_model_status_pb2.GetModelStatusRequest()
    req.model_spec.name, req.model_spec.version.value = "mlp", 7
    e = rpc_error(models.GetModelStatus, req)
    assert (e.code(), e.details()) == (grpc.StatusCode.NOT_FOUND, "Could not find version 7 of model mlp")
    e = rpc_error(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest())
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_health_service_reports_serving(demo_server):
    with grpc.insecure_channel(demo_server.grpc_target) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        for svc in ("", "PredictionService", "ModelService"):
            assert stub.Check(health_pb2.HealthCheckRequest(service=svc)).status == \
                health_pb2.HealthCheckResponse.SERVING


X10 = np.ones((1, 10), np.float32)


@pytest.mark.parametrize("req,code,message", [
    (predict_request("nope", {"x": X10}), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
    (predict_request("mlp", {"x": X10}, version=9), "NOT_FOUND", "Servable not found for request: Specific(mlp, 9)"),
    (predict_request("mlp", {"x": X10}, label="beta"), "INVALID_ARGUMENT", "Unrecognized servable version label: beta"),
    (predict_request("mlp", {"x": X10}, signature="nope"), "FAILED_PRECONDITION",
     'Serving signature key "nope" not found.'),
    (predict_request("mlp", {}), "INVALID_ARGUMENT",
     "input size does not match signature: 0!=1 len({}) != len({x}). Sent extra: {}. Missing but required: {x}."),
    (predict_request("mlp", {"x": X10, "z": X10}), "INVALID_ARGUMENT",
     "input size does not match signature: 2!=1 len({x,z}) != len({x}). Sent extra: {z}. Missing but required: {}."),
    (predict_request("mlp", {"z": X10}), "INVALID_ARGUMENT",
     "Signature input alias: x(feed name: serving_default_x:0) not found in request and no default value "
     "provided. Inputs expected to be in the request {x}, or default input alias set: "),
    (predict_request("mlp", {"x": np.ones((1, 10), np.int32)}), "INVALID_ARGUMENT",
     "Expects arg[0] to be float but int32 is provided"),
    (predict_request("", {"x": X10}), "INVALID_ARGUMENT", "ModelSpec has no name specified."),
    (predict_pb2.PredictRequest(), "INVALID_ARGUMENT", "Missing ModelSpec"),
])
def test_predict_failures_use_tf_serving_codes(stubs, req, code, message):
    predict, _ = stubs
    e = rpc_error(predict.Predict, req)
    assert (e.code().name, e.details()) == (code, message)


def test_shape_mismatch_is_reported_by_the_runtime(stubs):
    predict, _ = stubs
    e = rpc_error(predict.Predict, predict_request("mlp", {"x": np.ones((1, 3), np.float32)}))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "Matrix size-incompatible" in e.details()


def test_bad_tensor_proto_is_invalid_argument(stubs):
    predict, _ = stubs
    req = predict_request("mlp", {"x": X10})
    req.inputs["x"].tensor_content = b"\x00" * 7
    e = rpc_error(predict.Predict, req)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and e.details().startswith("tensor parsing error: x")


def test_classify_regress_failures(stubs):
    predict, _ = stubs
    ex = input_proto(census_examples([39.0], [40], [b"Masters"]))
    req = classification_pb2.ClassificationRequest(input=ex)
    req.model_spec.name, req.model_spec.signature_name = "census", "nope"
    e = rpc_error(predict.Classify, req)
    assert (e.code(), e.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope")
    req.model_spec.signature_name = "serving_default"
    assert rpc_error(predict.Classify, req).details() == "Expected one input Tensor."
    req.model_spec.signature_name = "classify"
    req.input.Clear()
    assert rpc_error(predict.Classify, req).details() == "Input is empty."
    bad = classification_pb2.ClassificationRequest()
    bad.model_spec.name, bad.model_spec.signature_name = "census", "classify"
    bad.input.example_list.examples.add().features.feature["age"].bytes_list.value.append(b"old")
    e = rpc_error(predict.Classify, bad)
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "age" in e.details()
    rreq = regression_pb2.RegressionRequest(input=ex)
    rreq.model_spec.name, rreq.model_spec.signature_name = "census", "classify"
    assert rpc_error(predict.Regress, rreq).details() == "Expected one output Tensor."


# ------------------------------------------------------------------------------------ lifecycle scenarios

def _copy_version(src: Path, model_dir: Path, version: int) -> None:
    """Publish atomically: copy to a hidden directory, then rename (what export/ does)."""
    tmp = model_dir / f".incoming-{version}"
    shutil.copytree(src, tmp)
    tmp.rename(model_dir / str(version))


class Traffic:
    """A client thread sending continuous Predicts; counts successes per version and failures."""

    def __init__(self, target: str, model: str, inputs: dict, label: str | None = None):
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
        self.req = predict_request(model, inputs, label=label)
        self.by_version: dict[int, int] = {}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                v = self.stub.Predict(self.req, timeout=10).model_spec.version.value
                self.by_version[v] = self.by_version.get(v, 0) + 1
            except grpc.RpcError as e:
                self.failures.append(f"{e.code().name}: {e.details()}")

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(15)

    def total(self) -> int:
        return sum(self.by_version.values())


def _status(target: str, model: str) -> dict[int, tuple[str, str]]:
    with grpc.insecure_channel(target) as ch:
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = model
        resp = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(req)
    return {s.version: (get_model_status_pb2.ModelVersionStatus.State.Name(s.state), s.status.error_message)
            for s in resp.model_version_status}


@pytest.fixture
def lifecycle_server(zoo, tmp_path, demo_server):
    if getattr(demo_server, "external", False):
        pytest.skip("needs control of the model directory")
    base, _ = zoo
    model_dir = tmp_path / "models" / "mlp"
    model_dir.mkdir(parents=True)
    shutil.copytree(base / "mlp" / "1", model_dir / "1")
    srv = InProcessServer(["--model_name=mlp", f"--model_base_path={model_dir}", "--file_system_poll_wait_seconds=1",
                           "--max_num_load_retries=1", "--load_retry_interval_micros=100000"], rest=False)
    srv.model_dir = model_dir
    srv.zoo_base = base
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_rollover_under_traffic_fails_no_request(lifecycle_server):
    srv = lifecycle_server
    with Traffic(srv.grpc_target, "mlp", {"x": X10}) as traffic:
        wait_for(lambda: traffic.total() > 20, what="traffic on v1")
        _copy_version(srv.zoo_base / "mlp" / "2", srv.model_dir, 2)
        wait_for(lambda: _status(srv.grpc_target, "mlp") == {2: ("AVAILABLE", ""), 1: ("END", "")},
                 what="v2 AVAILABLE and v1 unloaded")
        wait_for(lambda: traffic.by_version.get(2, 0) > 20, what="traffic on v2")
    assert traffic.failures == []
    assert traffic.by_version.get(1, 0) > 0 and traffic.by_version.get(2, 0) > 0


def test_corrupt_and_half_written_versions_leave_serving_untouched(lifecycle_server):
    srv = lifecycle_server
    with Traffic(srv.grpc_target, "mlp", {"x": X10}) as traffic:
        wait_for(lambda: traffic.total() > 10)
        corrupt = srv.model_dir / "5"
        shutil.copytree(srv.zoo_base / "mlp" / "2", corrupt)
        (corrupt / "saved_model.pb").write_bytes(b"\x08\x01garbage-not-a-proto")
        wait_for(lambda: _status(srv.grpc_target, "mlp").get(5, ("",))[0] == "END", what="corrupt v5 failed")
        state, message = _status(srv.grpc_target, "mlp")[5]
        assert message  # status explains why
        assert srv.alive()
        half = srv.model_dir / "6"
        (half / "variables").mkdir(parents=True)
        shutil.copy(srv.zoo_base / "mlp" / "2" / "saved_model.pb", half / "saved_model.pb")
        n = traffic.total()
        wait_for(lambda: traffic.total() > n + 50, what="more traffic")
        assert 6 not in _status(srv.grpc_target, "mlp")  # not loaded while incomplete
        assert set(traffic.by_version) == {1}
        for f in (srv.zoo_base / "mlp" / "2" / "variables").iterdir():
            shutil.copy(f, half / "variables" / f.name)
        shutil.copytree(srv.zoo_base / "mlp" / "2" / "assets.extra", half / "assets.extra")
        wait_for(lambda: _status(srv.grpc_target, "mlp").get(6, ("",))[0] == "AVAILABLE",
                 what="completed v6 loads")
        wait_for(lambda: traffic.by_version.get(6, 0) > 10)
    assert traffic.failures == []


def test_labels_switched_by_reload_config(lifecycle_server):
    srv = lifecycle_server
    _copy_version(srv.zoo_base / "mlp" / "2", srv.model_dir, 2)

    def config(labels: dict[str, int]) -> model_server_config_pb2.ModelServerConfig:
        lab = "".join(f'version_labels {{ key: "{k}" value: {v} }} ' for k, v in labels.items())
        return text_format.Parse(f'model_config_list {{ config {{ name: "mlp" base_path: "{srv.model_dir}" '
                                 f'model_platform: "tensorflow" model_version_policy {{ all {{}} }} {lab} }} }}',
                                 model_server_config_pb2.ModelServerConfig())

    with grpc.insecure_channel(srv.grpc_target) as ch:
        models = model_service_pb2_grpc.ModelServiceStub(ch)
        models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config({})))
        wait_for(lambda: _status(srv.grpc_target, "mlp").get(2, ("",))[0] == "AVAILABLE"
                 and _status(srv.grpc_target, "mlp").get(1, ("",))[0] == "AVAILABLE")
        resp = models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config({"stable": 1})))
        assert resp.status.error_code == 0
        with Traffic(srv.grpc_target, "mlp", {"x": X10}, label="stable") as traffic:
            wait_for(lambda: traffic.total() > 20)
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config({"stable": 2})))
            n = traffic.by_version.get(2, 0)
            wait_for(lambda: traffic.by_version.get(2, 0) > n + 20)
        assert traffic.failures == [] and traffic.by_version.get(1) and traffic.by_version.get(2)
        with pytest.raises(grpc.RpcError) as e:
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config({"stable": 9})))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert e.value.details() == ("Request to assign label to version 9 of model mlp, which is not currently "
                                     "available for inference")
        req = predict_request("mlp", {"x": X10}, label="stable")
        assert prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(req).model_spec.version.value == 2
        with pytest.raises(grpc.RpcError) as e:
            models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest())
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sigterm_exits_zero(lifecycle_server):
    assert lifecycle_server.stop() == 0


def test_startup_failure_message_and_exit_code(tmp_path):
    srv = ServerProcess(["--model_config_file=" + str(tmp_path / "missing.config")], rest=False)
    assert srv.proc.wait(120) == 255
    assert f"Failed to start server. Error: INVALID_ARGUMENT: Invalid protobuf file: '{tmp_path}/missing.config'" \
        in srv.log_text()
    srv = ServerProcess(["--model_base_path=relative/path"], rest=False)
    assert srv.proc.wait(120) == 255
    assert "Expected model default to have an absolute path or URI; got base_path()=relative/path" in srv.log_text()


def test_bad_warmup_data_fails_the_load_and_keeps_serving(lifecycle_server):
    srv = lifecycle_server
    bad = srv.model_dir / ".incoming-8"
    shutil.copytree(srv.zoo_base / "mlp" / "2", bad)
    (bad / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"this is not a tfrecord file at all")
    bad.rename(srv.model_dir / "8")
    wait_for(lambda: _status(srv.grpc_target, "mlp").get(8, ("",))[0] == "END", what="v8 load failed")
    assert "Please verify your warmup data is in TFRecord format." in _status(srv.grpc_target, "mlp")[8][1]
    with grpc.insecure_channel(srv.grpc_target) as ch:
        resp = prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict(predict_request("mlp", {"x": X10}))
    assert resp.model_spec.version.value == 1


def test_config_file_poll_reload_swaps_models(zoo, tmp_path):
    base, _ = zoo
    cfg = tmp_path / "models.config"

    def write(name):
        tmp = tmp_path / "models.config.tmp"
        tmp.write_text(f'model_config_list {{ config {{ name: "{name}" base_path: "{base}/{name}" '
                       f'model_platform: "tensorflow" }} }}')
        tmp.rename(cfg)

    write("linear")
    srv = InProcessServer([f"--model_config_file={cfg}", "--model_config_file_poll_wait_seconds=1"], rest=False)
    try:
        srv.wait_ready()
        assert _status(srv.grpc_target, "linear") == {1: ("AVAILABLE", "")}
        write("multi")
        wait_for(lambda: _safe_status(srv.grpc_target, "multi") == {1: ("AVAILABLE", "")}, what="multi loaded")
        wait_for(lambda: _safe_status(srv.grpc_target, "linear") is None, what="linear removed")
        cfg.write_text("model_config_list { config { name: ")  # a broken file is logged and ignored
        with grpc.insecure_channel(srv.grpc_target) as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            for _ in range(3):
                resp = stub.Predict(predict_request("multi", {"x": np.ones((1, 2), np.float32)}))
                assert resp.model_spec.version.value == 1
                threading.Event().wait(1.0)
        assert srv.alive()
        assert "Failed to read ModelServerConfig file" in srv.log_text()
    finally:
        srv.stop()


def _safe_status(target, model):
    try:
        return _status(target, model)
    except grpc.RpcError:
        return None


def test_version_flag():
    import subprocess
    import sys

    from tests.server_util import REPO

    r = subprocess.run([sys.executable, "-m", "tfsb.server", "--version"], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0
    assert r.stdout.startswith("TensorFlow ModelServer: ") and "\nTensorFlow Library: 2.21" in r.stdout


def test_the_health_service_exists_only_when_asked(zoo):
    """--enable_grpc_healthcheck_service (default false, as in TF Serving) registers grpc.health.v1.Health."""
    from tests.inprocess import InProcessServer

    base, _ = zoo
    for flag, want in (([], grpc.StatusCode.UNIMPLEMENTED), (["--enable_grpc_healthcheck_service"], None)):
        srv = InProcessServer(["--model_name=linear", f"--model_base_path={base / 'linear'}", *flag], rest=False)
        srv.wait_ready()
        try:
            with grpc.insecure_channel(srv.grpc_target) as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                if want is None:
                    assert stub.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING
                else:
                    with pytest.raises(grpc.RpcError) as e:
                        stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
                    assert e.value.code() == want
        finally:
            srv.stop()
