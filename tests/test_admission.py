"""The request memory budget and the bounded gunzip (unit tier)."""

from __future__ import annotations

import gzip
import threading

import pytest

from tfsb.server.admission import MemoryBudget
from tfsb.errors import InvalidArgumentError, ResourceExhaustedError
from tfsb.server.rest import gunzip


def test_budget_reserves_and_releases():
    b = MemoryBudget(100)
    with b.reserve(60) as r:
        assert b.used == 60
        with pytest.raises(ResourceExhaustedError, match="retry later"):
            b.reserve(50)
        r.grow(40)
        assert b.used == 100
    assert b.used == 0
    with pytest.raises(ResourceExhaustedError, match="more than the server's request memory budget"):
        b.reserve(101)
    assert b.used == 0


def test_budget_is_thread_safe():
    b = MemoryBudget(1000)
    admitted = []

    def take():
        for _ in range(200):
            try:
                r = b.reserve(7)
            except ResourceExhaustedError:
                continue
            admitted.append(1)
            assert b.used <= 1000
            r.release()

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.used == 0 and admitted


def test_unlimited_budget_never_refuses():
    b = MemoryBudget(0)
    with b.reserve(1 << 40), b.reserve(1 << 50):
        assert b.used == (1 << 40) + (1 << 50)


def test_gunzip_stops_at_the_limit_without_inflating_everything():
    bomb = gzip.compress(b"\0" * (64 << 20))
    seen = []
    with pytest.raises(ResourceExhaustedError, match="once decompressed"):
        gunzip(bomb, 4 << 20, seen.append)
    assert sum(seen) <= 5 << 20  # stopped within one step of the limit


def test_gunzip_handles_members_and_garbage():
    assert gunzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 0) == b"abcd"
    with pytest.raises(InvalidArgumentError, match="Failed to decompress"):
        gunzip(b"not gzip at all", 0)
    with pytest.raises(InvalidArgumentError, match="Failed to decompress"):
        gunzip(gzip.compress(b"x" * 1000)[:-12], 0)


def test_budget_callback_can_refuse_mid_stream():
    b = MemoryBudget(3 << 20)
    r = b.reserve(0)
    with pytest.raises(ResourceExhaustedError):
        gunzip(gzip.compress(b"\0" * (16 << 20)), 0, lambda n: r.grow(n))
    r.release()
    assert b.used == 0


def test_check_refuses_like_reserve_but_takes_nothing():
    b = MemoryBudget(100)
    b.check(100)
    assert b.used == 0
    with b.reserve(80):
        with pytest.raises(ResourceExhaustedError, match="retry later"):
            b.check(30, "A request of 15 bytes")
        b.check(20)
        assert b.used == 80
    with pytest.raises(ResourceExhaustedError, match="more than the server's request memory budget"):
        b.check(101)


def test_a_refusal_suggests_grpc_only_for_json_bodies():
    """A JSON body costs ~20x its size once parsed, the same tensors over gRPC about their own size."""
    b = MemoryBudget(100)
    with pytest.raises(ResourceExhaustedError, match="smaller requests or over gRPC$"):
        b.reserve(200, "A JSON request body of 10 bytes", json_body=True)
    r = b.reserve(0, "A JSON request body of 0 bytes", json_body=True)
    with pytest.raises(ResourceExhaustedError, match="or over gRPC$"):
        r.grow(200, "A decompressed JSON request body")  # the reservation remembers what it is for
    with pytest.raises(ResourceExhaustedError, match="smaller requests$"):
        b.reserve(200, "A request of 200 bytes")
