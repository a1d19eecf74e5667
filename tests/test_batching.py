"""Server-side batching: the scheduler with a fake servable (unit) and a live server with --enable_batching."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import requests

from tfsb.server.batching import BatchedServable, BatchOptions, BatchScheduler
from tfsb.server.metrics import Metrics
from tfsb.errors import FailedPreconditionError, InvalidArgumentError, UnavailableError


class FakeSig:
    name = "serving_default"


class FakeServable:
    """Doubles its input; records batch sizes; `gate` holds a run open."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[int] = []
        self.gate = gate

    def check_dtypes(self, sig, inputs):
        return list(inputs)

    def run_signature(self, sig, inputs, outputs):
        if self.gate is not None:
            self.gate.wait(10)
        x = inputs["x"]
        self.batches.append(x.shape[0])
        return {"y": x * 2}


METRICS = Metrics()


def _concurrent(fn, n):
    out, errs = [None] * n, [None] * n

    def one(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            errs[i] = e

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out, errs


def test_batched_servable_wraps_the_runtime():
    """The runtime knows nothing of batching: the wrapper sends signature runs through the scheduler, passes
    everything else through, and closes the version it wraps."""
    fake = FakeServable()
    fake.signatures = {"serving_default": FakeSig}
    fake.closed = 0

    def close():
        fake.closed += 1

    fake.close = close
    sched = BatchScheduler(BatchOptions(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1), METRICS)
    wrapped = BatchedServable(fake, sched)
    assert wrapped.signatures is fake.signatures
    out, errs = _concurrent(lambda i: wrapped.run_signature(FakeSig, {"x": np.full((2, 1), i, np.float32)}, ["y"]), 3)
    assert errs == [None] * 3 and [o["y"][0, 0] for o in out] == [0.0, 2.0, 4.0]
    assert fake.batches == [6]  # one merged run of the three requests
    wrapped.close()
    assert fake.closed == 1


def test_concurrent_requests_are_merged_and_split_back():
    sched = BatchScheduler(BatchOptions(max_batch_size=16, batch_timeout_micros=200_000, num_batch_threads=1), METRICS)
    fake = FakeServable()
    out, errs = _concurrent(lambda i: sched.run(fake, FakeSig, {"x": np.full((2, 3), i, np.float32)}, ["y"]), 8)
    assert errs == [None] * 8
    for i, o in enumerate(out):
        np.testing.assert_array_equal(o["y"], np.full((2, 3), 2 * i, np.float32))  # each gets its own rows
    assert sum(fake.batches) == 16 and len(fake.batches) < 8


def test_allowed_batch_sizes_pad_and_slice():
    sched = BatchScheduler(BatchOptions(max_batch_size=8, batch_timeout_micros=0, allowed_batch_sizes=(4, 8)), METRICS)
    fake = FakeServable()
    out = sched.run(fake, FakeSig, {"x": np.arange(3, dtype=np.float32)[:, None]}, ["y"])
    assert fake.batches == [4] and out["y"].shape == (3, 1)
    np.testing.assert_array_equal(out["y"][:, 0], [0, 2, 4])


def test_variable_length_inputs_need_padding_enabled():
    def run(pad):
        sched = BatchScheduler(BatchOptions(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1,
                                            pad_variable_length_inputs=pad), METRICS)
        fake = FakeServable()
        out, errs = _concurrent(lambda i: sched.run(fake, FakeSig, {"x": np.ones((1, 2 + i), np.float32)}, ["y"]), 2)
        return out, errs, fake

    out, errs, fake = run(True)
    assert errs == [None, None] and fake.batches == [2]
    assert {o["y"].shape for o in out} == {(1, 3)}  # padded to the batch maximum
    _, errs, _ = run(False)
    assert all(isinstance(e, FailedPreconditionError) and "padding is turned off" in e.message for e in errs)


def test_task_larger_than_max_batch_and_input_checks():
    sched = BatchScheduler(BatchOptions(max_batch_size=4), METRICS)
    fake = FakeServable()
    with pytest.raises(InvalidArgumentError, match="Task size 5 is larger than maximum input batch size 4"):
        sched.run(fake, FakeSig, {"x": np.ones((5, 1), np.float32)}, ["y"])
    with pytest.raises(InvalidArgumentError, match="must have at least one dimension"):
        sched.run(fake, FakeSig, {"x": np.float32(1.0).reshape(())}, ["y"])
    with pytest.raises(InvalidArgumentError, match="equal 0th-dimension size"):
        sched.run(fake, FakeSig, {"x": np.ones((2, 1)), "z": np.ones((3, 1))}, ["y"])


def fake_started(sched) -> bool:
    return sched._running == 1  # one request's thread is running its batch (held by the gate)


def test_full_queue_answers_unavailable():
    gate = threading.Event()
    sched = BatchScheduler(BatchOptions(max_batch_size=1, max_enqueued_batches=2, num_batch_threads=1), METRICS)
    fake = FakeServable(gate)
    threads = [threading.Thread(target=lambda: sched.run(fake, FakeSig, {"x": np.ones((1, 1))}, ["y"]))
               for _ in range(3)]
    for t in threads:  # one runs (held by the gate), two fill the queue
        t.start()
    deadline = time.monotonic() + 30
    while not (fake_started(sched) and sum(q.rows for q in sched._queues.values()) == 2):
        assert time.monotonic() < deadline, "requests did not queue up"
        time.sleep(0.01)
    with pytest.raises(UnavailableError, match="The batch scheduling queue to which this task was submitted is full"):
        sched.run(fake, FakeSig, {"x": np.ones((1, 1))}, ["y"])
    gate.set()
    for t in threads:
        t.join()


def test_allowed_sizes_must_end_at_max():
    with pytest.raises(InvalidArgumentError, match="Last entry in allowed_batch_sizes must match max_batch_size"):
        BatchOptions(max_batch_size=8, allowed_batch_sizes=(2, 4)).validate()


def test_live_server_batches_and_reports_it(zoo, tmp_path, demo_server):
    if getattr(demo_server, "external", False):
        pytest.skip("needs its own flags")
    from tfsb.client import GrpcClient
    from tests.inprocess import InProcessServer

    base, trained = zoo
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 50000 }\n"
                      "num_batch_threads { value: 1 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 8\n")
    mon = tmp_path / "monitoring.config"
    mon.write_text('prometheus_config { enable: true path: "/metrics" }')
    srv = InProcessServer(["--model_name=mlp", f"--model_base_path={base}/mlp", "--enable_batching",
                           f"--batching_parameters_file={params}", f"--monitoring_config_file={mon}"]).wait_ready()
    try:
        xs = [np.random.default_rng(i).random((1, 10), dtype=np.float32) for i in range(16)]
        client = GrpcClient(srv.grpc_target)
        out, errs = _concurrent(lambda i: client.predict("mlp", {"x": xs[i]})["y"], 16)
        assert errs == [None] * 16
        ref = trained["mlp@2"].endpoints["serving_default"]
        for i in range(16):
            np.testing.assert_allclose(out[i], ref.call({"x": xs[i]})["y"], rtol=1e-5)
        text = requests.get(srv.rest_url + "/metrics").text
        runs = [float(line.split()[-1]) for line in text.splitlines()
                if line.startswith(":tensorflow:serving:batching_session:wrapped_run_count ")]
        assert runs and runs[0] < 16 + 2  # fewer model runs than requests (+ warmup records)
        assert ":tensorflow:serving:batching_session:processed_batch_size_bucket" in text
        r = requests.post(srv.rest_url + "/v1/models/mlp:predict", json={"instances": [[0.5] * 10] * 9})
        assert r.status_code == 400
        assert r.json()["error"] == "Task size 9 is larger than maximum input batch size 8"
    finally:
        srv.stop()
