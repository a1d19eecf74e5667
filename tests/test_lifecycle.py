"""The lifecycle: readiness, shutdown order (readiness false → transports drain in parallel → unload),
bounded by the grace period, once only."""

from __future__ import annotations

import threading
import time

import pytest

from tfsb.server.lifecycle import Lifecycle


def test_ready_only_while_serving_with_every_model_available():
    available = [False]
    lc = Lifecycle(models_available=lambda: available[0])
    assert not lc.ready() and not lc.stopping and not lc.stopped.is_set()  # starting
    lc.serving()
    assert not lc.ready()  # a configured model has no AVAILABLE version yet
    available[0] = True
    assert lc.ready() and not lc.stopping
    lc.shutdown(1.0)
    assert not lc.ready() and lc.stopping and lc.stopped.is_set()


def test_shutdown_order_parallel_drains_then_unload():
    lc = Lifecycle()
    lc.serving()
    events: list[str] = []
    seen_ready: list[bool] = []
    lc.on_change(lambda: seen_ready.append(lc.ready()))
    both_draining = threading.Barrier(2, timeout=5)

    def drain(name):
        def run(grace):
            events.append(f"drain {name} ready={lc.ready()}")
            both_draining.wait()  # fails (BrokenBarrierError) unless the drains run at the same time
            events.append(f"drained {name}")
        return run

    lc.on_drain(drain("grpc"))
    lc.on_drain(drain("rest"))
    assert lc.shutdown(5.0, unload=lambda left: events.append(f"unload {left > 0}"))
    assert sorted(events[:2]) == ["drain grpc ready=False", "drain rest ready=False"]
    assert sorted(events[2:4]) == ["drained grpc", "drained rest"]
    assert events[4:] == ["unload True"]
    assert seen_ready == [True, False]  # a listener hears the change before any drain starts
    assert not lc.shutdown(5.0, unload=lambda left: events.append("again"))  # once only
    assert "again" not in events


def test_a_stuck_drain_cannot_hold_shutdown_past_the_grace_period():
    lc = Lifecycle()
    lc.serving()
    lc.on_drain(lambda grace: time.sleep(60))
    unloaded = threading.Event()
    t0 = time.monotonic()
    lc.shutdown(0.5, unload=lambda left: unloaded.set())
    took = time.monotonic() - t0
    assert unloaded.is_set() and took < 10, took  # grace + the fixed slack, not the drain's 60 s


def test_wait_returns_once_shutdown_begins():
    lc = Lifecycle()
    assert lc.wait(0.01) is False
    threading.Timer(0.05, lc.shutdown, args=(0.1,)).start()
    assert lc.wait(5) is True


def test_an_open_health_watch_does_not_hold_shutdown_for_the_grace_period(zoo):
    """Kubernetes-style gRPC health watchers keep a stream open forever: once no request is in flight the
    drain ends it (after it said NOT_SERVING) instead of waiting out the grace period."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.inprocess import InProcessServer
    from tests.server_util import watch_statuses

    base, _ = zoo
    srv = InProcessServer(["--model_name=linear", f"--model_base_path={base}/linear",
                           "--enable_grpc_healthcheck_service", "--shutdown_grace_period_seconds=60"],
                          rest=False).wait_ready()
    with grpc.insecure_channel(srv.grpc_target) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        t0 = time.monotonic()
        stopper = threading.Thread(target=srv.server.stop, args=(60.0,))
        stopper.start()
        statuses = watch_statuses(watch)
        stopper.join(30)
        took = time.monotonic() - t0
    assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    assert not stopper.is_alive() and took < 15, took  # not the 60 s grace period
    srv.stop()


def test_the_server_holds_its_transports_by_what_they_bound(zoo, tmp_path):
    """build_and_start wires a gRPC and a REST transport (the Transport protocol); each reports the address
    it bound (TCP beside the unix socket), and the lifecycle drains both at shutdown."""
    import requests

    from tfsb.server.grpc_transport import GrpcTransport
    from tfsb.server.rest import RestTransport
    from tests.inprocess import InProcessServer

    base, _ = zoo
    sock = tmp_path / "grpc.sock"
    srv = InProcessServer(["--model_name=linear", f"--model_base_path={base}/linear", "--grpc_bind_address=127.0.0.1",
                           "--rest_api_bind_address=127.0.0.1", f"--grpc_socket_path={sock}"]).wait_ready()
    try:
        grpc_t, rest_t = srv.server.transports
        assert isinstance(grpc_t, GrpcTransport) and isinstance(rest_t, RestTransport)
        assert grpc_t.address == f"127.0.0.1:{srv.grpc_port}" and grpc_t.port == srv.grpc_port
        assert rest_t.address == f"127.0.0.1:{srv.rest_port}"
        assert requests.get(f"http://{rest_t.address}/v1/models/linear", timeout=10).status_code == 200
    finally:
        srv.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{srv.rest_url}/v1/models/linear", timeout=5)
