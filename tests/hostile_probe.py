"""A normal client for the hostile tier, in its own process so the attacker's GIL cannot slow it down:
`python -m tests.hostile_probe GRPC_TARGET REST_URL X_JSON EXPECTED_JSON` sends a gRPC and a REST predict
of `linear` every 100 ms until stdin closes, printing `round N` after each round (the test waits on those
instead of sleeping), then prints a JSON summary. It speaks gRPC through the project's
client, which imports no TensorFlow: every attack gets its probe in well under a second."""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import requests

from tfsb.client import GrpcClient


def main() -> None:
    target, url, x_json, expected_json = sys.argv[1:5]
    x = np.asarray(json.loads(x_json), np.float32)
    expected = np.asarray(json.loads(expected_json))
    client = GrpcClient(target, timeout=5, retries=0)
    session = requests.Session()
    # A stall is what the hostile tier hunts, not a slow shared CI host: an answer counts as stalled beyond
    # 2 s or ten times the slowest answer of the first (pre-attack) round, whichever is larger.
    out = {"answered": 0, "slowest": 0.0, "failures": [], "stall_s": 2.0}
    first_round: list[float] = []
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

    def via_grpc():
        return client.predict("linear", {"x": x})["y"].reshape(expected.shape)

    def via_rest():
        r = session.post(url + "/v1/models/linear:predict", json={"instances": x.tolist()}, timeout=5)
        r.raise_for_status()
        return np.array(r.json()["predictions"])

    rounds = 0
    print("ready", flush=True)
    while not stop.is_set():
        for what, fn in (("gRPC predict", via_grpc), ("REST predict", via_rest)):
            t0 = time.perf_counter()
            try:
                got = fn()
            except Exception as e:  # noqa: BLE001 - any failure of a normal request is a finding
                out["failures"].append(f"{what}: {type(e).__name__}: {e}"[:300])
                continue
            dt = time.perf_counter() - t0
            out["slowest"] = max(out["slowest"], dt)
            if rounds == 0:
                first_round.append(dt)
                out["stall_s"] = max(2.0, 10 * max(first_round))
            if not np.allclose(got, expected, rtol=1e-5):
                out["failures"].append(f"{what}: wrong answer {got.tolist()}")
            elif dt > out["stall_s"]:
                out["failures"].append(f"{what}: answered in {dt:.2f}s")
            else:
                out["answered"] += 1
        rounds += 1
        print(f"round {rounds}", flush=True)
        stop.wait(0.1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
