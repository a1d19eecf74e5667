"""The request hot path's decisions (issue: performance 2), each checked without timing anything: the session
default that runs the graph on the request's thread, which REST requests may skip the worker pool, and one
version lookup per request."""

from __future__ import annotations

import contextlib
import json
import time

from tensorflow.core.protobuf import meta_graph_pb2

from tfsb.server import platform
from tfsb.server.admission import MemoryBudget
from tfsb.server.core import Core, Inference
from tfsb.server.flags import parse_flags
from tfsb.server.metrics import Metrics
from concurrent.futures import ThreadPoolExecutor

from tfsb.server.rest import INLINE_COST_RATIO, RestApp, _Costs
from tfsb.server.rest_routes import RestHandler
from tfsb.server.runtime import Signature, TensorNameServable
from tfsb.server.versions import State, VersionRecord


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
    route = "/v1/models/m:predict"
    assert not costs.cheap(route)  # unknown: the pool first
    for _ in range(5):
        costs.observe_pool(route, 1e-4)
    assert costs.cheap(route)
    costs.observe_loop(route, 1e-4)
    assert costs.cheap(route)
    costs.observe_loop(route, 0.05)  # one slow answer (a new, slower version) moves it back
    assert not costs.cheap(route)
    assert not costs.cheap("/v1/models/other:predict")
    for i in range(_Costs.MAX_PATHS + 10):  # client-chosen paths cannot grow it without bound
        costs.observe_pool(f"/v1/models/m{i}:predict", 0.0)
        costs.observe_loop(f"/v1/models/m{i}:predict", 0.0)
    assert len(costs._pooled) <= _Costs.MAX_PATHS and len(costs._loop_s) <= _Costs.MAX_PATHS


def test_the_inline_threshold_is_relative_to_the_hosts_own_hand_off():
    """No wall-clock constant: the same route cost is cheap next to a slow host's hand-off and not next to a
    fast host's."""
    route = "/v1/models/m:predict"
    slow, fast = _Costs(handoff_s=200e-6), _Costs(handoff_s=10e-6)
    for costs in (slow, fast):
        costs.observe_pool(route, 400e-6)
    assert slow.cheap(route) and not fast.cheap(route)
    assert 400e-6 < INLINE_COST_RATIO * 200e-6 and 400e-6 > INLINE_COST_RATIO * 10e-6


def test_a_route_that_waits_on_the_loop_goes_back_to_the_pool_and_is_retried_less_often():
    """Little CPU in the pool (a model waiting on a device) lets a route try the loop; the wall time it then
    holds the loop sends it back to the pool, whatever its CPU says, for RETRY_FIRST requests, then twice as
    many after each further slow try, up to RETRY_MAX."""
    costs, route = _Costs(handoff_s=20e-6), "/v1/models/gpu:predict"
    costs.observe_pool(route, 10e-6)
    assert costs.cheap(route)
    waits = []
    for _ in range(9):
        assert costs.cheap(route)
        costs.observe_loop(route, 0.01)  # 10 ms holding the loop
        pooled = 0
        while not costs.cheap(route):
            costs.observe_pool(route, 10e-6)
            pooled += 1
        waits.append(pooled)
    assert waits == [16, 32, 64, 128, 256, 512, 1024, 1024, 1024]
    costs.observe_loop(route, 1e-6)  # fast now (a new version): the next slow try waits RETRY_FIRST again
    for _ in range(40):
        costs.observe_loop(route, 1e-6)
    costs.observe_loop(route, 0.05)
    pooled = 0
    while not costs.cheap(route):
        costs.observe_pool(route, 10e-6)
        pooled += 1
    assert pooled == _Costs.RETRY_FIRST


def test_the_hand_off_is_calibrated_as_cpu_on_the_requests_own_path():
    """The calibration runs a no-op through the pool from an event loop, as a request's `run_in_executor` +
    `wait_for` does, and counts CPU: on a host where a worker cannot start at once, waiting is not cost."""
    costs = _Costs()
    with ThreadPoolExecutor(2) as pool:
        measured = costs.calibrate(pool, samples=8)
        assert 0 < measured < 0.05 and costs.handoff_s == measured

    class Stalled(ThreadPoolExecutor):  # every hand-off waits 20 ms on a worker that uses no CPU
        def submit(self, fn, *args):
            return super().submit(lambda: (time.sleep(0.02), fn(*args))[1])

    with Stalled(1) as stalled:
        assert _Costs().calibrate(stalled, samples=4) < 0.01


def test_the_pool_charges_a_route_its_cpu_and_the_loop_its_wall_time():
    """In the pool a handler waiting for the GIL (or the CPU) is charged only its CPU, so a busy pool cannot
    keep a cheap route off the loop; on the loop every waited millisecond counts, as the loop waited too."""
    app = object.__new__(RestApp)
    app._costs = _Costs(handoff_s=20e-6)
    route = "/v1/models/m:predict"
    app._run = lambda *a: time.sleep(0.01)  # 10 ms wall, ~no CPU
    app._pooled_run("POST", route, b"", False, None, None)
    assert app._costs.cheap(route)
    app._loop_run("POST", route, b"", None)
    assert not app._costs.cheap(route)
    app = object.__new__(RestApp)
    app._costs = _Costs(handoff_s=20e-6)
    app._run = lambda *a: sum(range(400_000))  # milliseconds of CPU
    app._pooled_run("POST", route, b"", False, None, None)
    assert not app._costs.cheap(route)


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
        yield VersionRecord(self.resolves, "", State.AVAILABLE, servable=_Doubler(sd))


class _Doubler(TensorNameServable):
    """A runtime whose one signature doubles `x`."""

    RUNTIME = "TF1"

    def __init__(self, sd: meta_graph_pb2.SignatureDef):
        self.signature_defs = {"serving_default": sd}
        self.signatures = {"serving_default": Signature("serving_default", sd)}

    def run(self, feeds, fetches):
        return [feeds["x:0"] * 2]


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


def test_a_batched_route_never_runs_on_the_loop(tmp_path):
    """A request through a batch queue waits for others, which cannot arrive while it holds the loop: its
    route stays in the pool however little CPU it used, and goes back to normal once a run skips the queue."""
    from tfsb.server.batching import BatchOptions, BatchScheduler

    scheduler = BatchScheduler(BatchOptions(max_batch_size=4, batch_timeout_micros=0, num_batch_threads=1),
                               Metrics())
    sig = Signature("serving_default", _sigdef())
    servable = _Doubler(_sigdef())
    app = object.__new__(RestApp)
    app._costs = _Costs(handoff_s=1.0)  # every route is cheap next to a 1 s hand-off
    route = "/v1/models/batched:predict"

    def batched(*_):
        import numpy as np
        return scheduler.run(servable, sig, {"x": np.ones((1, 1), np.float32)}, ["y"])

    app._run = batched
    app._pooled_run("POST", route, b"", False, None, None)
    assert not app._costs.cheap(route)
    app._run = lambda *a: None  # a new version without batching
    app._pooled_run("POST", route, b"", False, None, None)
    assert app._costs.cheap(route)
    app._run = batched  # and when a probe on the loop queues, the loop's verdict is "never"
    app._loop_run("POST", route, b"", None)
    assert not app._costs.cheap(route)


def test_the_server_runs_tensorflows_own_kernels_unless_onednn_is_asked_for():
    """tensorflow_model_server's release build has no oneDNN kernels: the embedded server's entry point turns
    TensorFlow's oneDNN rewrites off before TensorFlow loads, and leaves an explicit choice alone."""
    import os
    import subprocess
    import sys
    from platform import machine as platform_machine

    probe = ("import tfsb.server.__main__\n"
             "from tensorflow.python.util import _pywrap_util_port as port\n"
             "print(port.IsMklEnabled())\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    default = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    asked = subprocess.run([sys.executable, "-c", probe], env={**env, "TF_ENABLE_ONEDNN_OPTS": "1"},
                           capture_output=True, text=True, timeout=120)
    assert default.stdout.split()[-1] == "False", default.stderr[-2000:]
    if platform_machine() == "x86_64":  # where TensorFlow's wheels carry oneDNN
        assert asked.stdout.split()[-1] == "True", asked.stderr[-2000:]
