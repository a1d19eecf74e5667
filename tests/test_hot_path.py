"""The request hot path's decisions (issue: performance 2), each checked without timing anything: the session
default that runs the graph on the request's thread, which REST requests may skip the worker pool, and one
version lookup per request."""

from __future__ import annotations

import contextlib
import json
from types import SimpleNamespace

from tensorflow.core.protobuf import meta_graph_pb2

from tfsb.server import platform
from tfsb.server.admission import MemoryBudget
from tfsb.server.core import Core, Inference
from tfsb.server.flags import parse_flags
from tfsb.server.metrics import Metrics
from concurrent.futures import ThreadPoolExecutor

from tfsb.server.rest import INLINE_COST_RATIO, _Costs
from tfsb.server.rest_routes import RestHandler
from tfsb.server.runtime import Signature


def test_session_default_runs_the_graph_on_the_calling_thread(tmp_path):
    assert platform.session_config_from_flags(parse_flags([])).inter_op_parallelism_threads == -1
    # TF Serving's own flags and files still decide when given
    cfg = platform.session_config_from_flags(parse_flags(["--tensorflow_inter_op_parallelism=4"]))
    assert (cfg.inter_op_parallelism_threads, cfg.intra_op_parallelism_threads) == (4, 0)
    cfg = platform.session_config_from_flags(parse_flags(["--tensorflow_session_parallelism=2"]))
    assert (cfg.inter_op_parallelism_threads, cfg.intra_op_parallelism_threads) == (2, 2)
    f = tmp_path / "session.config"
    f.write_text("intra_op_parallelism_threads: 3\n")
    cfg = platform.session_config_from_flags(parse_flags([f"--tensorflow_session_config_file={f}"]))
    assert (cfg.inter_op_parallelism_threads, cfg.intra_op_parallelism_threads) == (0, 3)


def test_only_recently_cheap_routes_skip_the_worker_pool():
    costs = _Costs(handoff_s=1e-4)
    assert not costs.cheap("/v1/models/m:predict")  # unknown: the pool first
    for _ in range(5):
        costs.observe("/v1/models/m:predict", 1e-4)
    assert costs.cheap("/v1/models/m:predict")
    costs.observe("/v1/models/m:predict", 0.05)  # one slow answer (a new, slower version) moves it back
    assert not costs.cheap("/v1/models/m:predict")
    assert not costs.cheap("/v1/models/other:predict")
    for i in range(_Costs.MAX_PATHS + 10):  # client-chosen paths cannot grow it without bound
        costs.observe(f"/v1/models/m{i}:predict", 0.0)
    assert len(costs._ewma) <= _Costs.MAX_PATHS


def test_the_inline_threshold_is_relative_to_the_hosts_own_hand_off():
    """No wall-clock constant: the same route cost is cheap next to a slow host's hand-off and not next to a
    fast host's."""
    route = "/v1/models/m:predict"
    slow, fast = _Costs(handoff_s=200e-6), _Costs(handoff_s=10e-6)
    for costs in (slow, fast):
        costs.observe(route, 400e-6)
    assert slow.cheap(route) and not fast.cheap(route)
    assert 400e-6 < INLINE_COST_RATIO * 200e-6 and 400e-6 > INLINE_COST_RATIO * 10e-6


def test_queueing_in_a_busy_pool_cannot_raise_the_hand_off_estimate():
    costs = _Costs(handoff_s=50e-6)
    for _ in range(3 * _Costs.WINDOW):  # every round trip waited in the queue
        costs.observe_handoff(0.02)
    assert costs.handoff_s == 50e-6
    for _ in range(_Costs.WINDOW):
        costs.observe_handoff(20e-6)  # a quieter moment shows a cheaper hand-off: the estimate follows
    assert costs.handoff_s == 20e-6
    for _ in range(_Costs.WINDOW):
        costs.observe_handoff(40e-6)  # and comes back up with the next window, never above the calibration
    assert costs.handoff_s == 40e-6


def test_the_hand_off_is_calibrated_on_the_idle_pool():
    costs = _Costs()
    with ThreadPoolExecutor(2) as pool:
        measured = costs.calibrate(pool, samples=8)
    assert 0 < measured < 1.0 and costs.handoff_s == measured


def _sigdef() -> meta_graph_pb2.SignatureDef:
    sd = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
    sd.inputs["x"].name, sd.inputs["x"].dtype = "x:0", 1
    sd.outputs["y"].name, sd.outputs["y"].dtype = "y:0", 1
    return sd


class _Registry:
    """Two versions whose signatures differ in dtype; counts lookups. The second lookup (if any) would see
    version 2, as during a rollover."""

    def __init__(self):
        self.resolves = 0

    def resolve(self, name, version, label):
        self.resolves += 1
        return self, None

    def model(self, name):  # the metrics label lookup (not a version resolution)
        return self

    @contextlib.contextmanager
    def acquire(self, version):
        sd = _sigdef()
        if self.resolves > 1:
            sd.inputs["x"].dtype = 9  # int64 in "version 2"
        servable = SimpleNamespace(
            signatures={"serving_default": Signature("serving_default", sd)}, signature_defs={"serving_default": sd},
            run_signature=lambda sig, inputs, outputs: {"y": inputs["x"] * 2}, RUNTIME="TF1")
        yield SimpleNamespace(servable=servable, version=self.resolves)


def test_rest_predict_resolves_the_version_once():
    registry = _Registry()
    core = Core(registry, Inference(Metrics()), budget=MemoryBudget(0))
    handler = RestHandler(core, registry)
    status, body, *_ = handler.process("POST", "/v1/models/m:predict", b'{"instances": [1.5, 2.5]}')
    assert status == 200, body
    assert registry.resolves == 1
    assert json.loads(body) == {"predictions": [3.0, 5.0]}


def test_rest_missing_signature_keeps_tf_servings_rest_wording():
    registry = _Registry()
    core = Core(registry, Inference(Metrics()), budget=MemoryBudget(0))
    handler = RestHandler(core, registry)
    status, body, *_ = handler.process("POST", "/v1/models/m:predict",
                                       b'{"signature_name": "nope", "instances": [1.0]}')
    assert status == 400
    assert json.loads(body) == {"error": 'Serving signature name: "nope" not found in signature def'}


def test_grpc_predict_and_metadata_resolve_the_version_once():
    """The gRPC transport resolves once too: input names and dtypes are checked and decoded against the
    version that runs the request, and metadata describes the version it names."""
    import numpy as np
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

    from tfsb.server.grpc_api import PredictionServicer
    from tfsb.wire import tensor_proto

    class Context:
        def abort(self, code, details):
            raise AssertionError(f"aborted: {code} {details}")

    registry = _Registry()
    servicer = PredictionServicer(Core(registry, Inference(Metrics()), budget=MemoryBudget(0)))
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "m"
    tensor_proto.from_numpy(np.array([1.5, 2.5], np.float32), into=req.inputs["x"])
    resp = servicer.Predict(req, Context())
    assert registry.resolves == 1 and resp.model_spec.version.value == 1
    np.testing.assert_array_equal(tensor_proto.to_numpy(resp.outputs["y"]), [3.0, 5.0])
    registry.resolves = 0
    md = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    md.model_spec.name = "m"
    servicer.GetModelMetadata(md, Context())
    assert registry.resolves == 1
