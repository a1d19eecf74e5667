"""`make soak`: 50 version swaps under concurrent gRPC + REST load with hostile requests mixed in, and
half the requests mirrored to the previous version (shadow traffic, moved on with each swap).

Bounded (stops after --max-seconds, default 540), loopback only. Prints requests sent, failed (must be 0),
swaps done, hostile inputs tried (and how many got an unexpected answer; hostile traffic configs included),
p99 latency during swaps, the shadow calls answered, failed and dropped, and the server's RSS at start,
after 5 and after 50 swaps. Exit status 1 if a request failed, a hostile input got a server error, no shadow
call was answered, or RSS after the last swap exceeds RSS after the 5th by more than --rss-margin-mib.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.server_util import ServerProcess, wait_for  # noqa: E402


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _hostile_bodies(rng: random.Random):
    """Malformed JSON, wrong nesting, wrong types, huge nesting, bad b64, unknown names."""
    yield b'{"instances": [[1.0, 2.0'
    yield b"\xff\xfe\x00garbage"
    yield b'{"instances": ' + b"[" * rng.randint(100, 5000) + b"]" * 3
    yield b'{"inputs": {"x": "a string where numbers belong"}}'
    yield b'{"instances": [{"b64": "!!!"}]}'
    yield b'{"signature_name": ["x"], "instances": [1]}'
    yield b'{"instances": [[1, 2], [3]]}'
    yield json.dumps({"inputs": {"nope": [[1.0] * 10]}}).encode()
    yield json.dumps({"instances": [[rng.random()] * rng.randint(1, 30)]}).encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--swaps", type=int, default=50)
    ap.add_argument("--max-seconds", type=float, default=540.0)
    ap.add_argument("--rss-margin-mib", type=float, default=64.0)
    args = ap.parse_args()
    t_start = time.monotonic()
    from tfsb.export.publish import publish
    from tfsb.export.zoo import build_mlp
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from tfsb.wire import tensor_proto

    work = Path(tempfile.mkdtemp(prefix="soak-"))
    src = work / "src"
    for v, seed in ((1, 1), (2, 2)):
        publish(build_mlp(seed), src, version=v)
    model_dir = work / "models" / "mlp"
    model_dir.mkdir(parents=True)
    shutil.copytree(src / "mlp" / "1", model_dir / "1")
    # the two newest versions stay loaded: clients get the newest, half their requests are mirrored to the
    # one before (shadow traffic, moved on with every swap by PUT /api/traffic)
    (work / "models.config").write_text(
        f'model_config_list {{ config {{ name: "mlp" base_path: "{model_dir}" model_platform: "tensorflow" '
        'model_version_policy { latest { num_versions: 2 } } } }\n')
    srv = ServerProcess([f"--model_config_file={work / 'models.config'}", "--file_system_poll_wait_seconds=1"])
    srv.wait_ready()
    stop = threading.Event()
    lock = threading.Lock()
    stats = {"sent": 0, "failed": 0, "hostile": 0, "hostile_unexpected": 0}
    swap_windows: list[tuple[float, float]] = []
    latencies: list[tuple[float, float]] = []  # (time, seconds)
    failures: list[str] = []
    x = np.random.default_rng(0).random((1, 10), dtype=np.float32)

    def grpc_traffic():
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target))
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "mlp"
        tensor_proto.from_numpy(x, into=req.inputs["x"])
        while not stop.is_set():
            t0 = time.perf_counter()
            try:
                stub.Predict(req, timeout=30)
                ok = True
            except grpc.RpcError as e:
                ok = False
                err = f"gRPC {e.code().name}: {e.details()}"
            with lock:
                stats["sent"] += 1
                if ok:
                    latencies.append((time.monotonic(), time.perf_counter() - t0))
                else:
                    stats["failed"] += 1
                    failures.append(err)

    def rest_traffic():
        s = requests.Session()
        body = json.dumps({"instances": x.tolist()}).encode()
        while not stop.is_set():
            t0 = time.perf_counter()
            r = s.post(srv.rest_url + "/v1/models/mlp:predict", data=body, timeout=30)
            with lock:
                stats["sent"] += 1
                if r.status_code == 200:
                    latencies.append((time.monotonic(), time.perf_counter() - t0))
                else:
                    stats["failed"] += 1
                    failures.append(f"REST {r.status_code}: {r.text[:200]}")

    def hostile_traffic():
        rng = random.Random(0)
        s = requests.Session()
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(srv.grpc_target))
        while not stop.is_set():
            for body in _hostile_bodies(rng):
                r = s.post(srv.rest_url + "/v1/models/mlp:predict", data=body, timeout=30)
                with lock:
                    stats["hostile"] += 1
                    stats["hostile_unexpected"] += int(r.status_code >= 500)  # a 5xx, never a 4xx or a lucky 200
            body = rng.choice([b"", b"{", b"[" * 50_000, b'{"models": {"mlp": {"shadow": {"to": 1, "fraction": NaN}}}}',
                               rng.randbytes(rng.randint(0, 256))])
            r = s.put(srv.rest_url + "/api/traffic", data=body, timeout=30)  # refused; the config in force stays
            with lock:
                stats["hostile"] += 1
                stats["hostile_unexpected"] += int(r.status_code != 400)
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "mlp"
            bad = req.inputs["x"]
            bad.dtype = rng.choice([1, 3, 7, 9, 99])
            for d in (rng.randint(-3, 2**40), 10):
                bad.tensor_shape.dim.add().size = d
            bad.tensor_content = rng.randbytes(rng.randint(0, 64))
            try:
                stub.Predict(req, timeout=30)
                unexpected = False
            except grpc.RpcError as e:
                unexpected = e.code() not in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION)
            with lock:
                stats["hostile"] += 1
                stats["hostile_unexpected"] += int(unexpected)
            time.sleep(0.01)

    threads = [threading.Thread(target=f, daemon=True) for f in
               (grpc_traffic, grpc_traffic, grpc_traffic, rest_traffic, rest_traffic, hostile_traffic)]
    rss = {"start": _rss_mib(srv.proc.pid)}
    for t in threads:
        t.start()
    swaps = 0
    try:
        for v in range(2, 2 + args.swaps):
            if time.monotonic() - t_start > args.max_seconds:
                print(f"stopping early: --max-seconds={args.max_seconds} reached", flush=True)
                break
            staging = model_dir / f".incoming-{v}"
            shutil.copytree(src / "mlp" / ("2" if v % 2 == 0 else "1"), staging)
            t0 = time.monotonic()
            staging.rename(model_dir / str(v))

            def swapped():
                st = requests.get(f"{srv.rest_url}/v1/models/mlp", timeout=10).json()["model_version_status"]
                states = {int(s["version"]): s["state"] for s in st}
                return states.get(v) == "AVAILABLE" and states.get(v - 2, "END") == "END"

            wait_for(swapped, timeout=120, interval=0.05, what=f"swap to v{v}")
            swap_windows.append((t0, time.monotonic()))
            requests.put(f"{srv.rest_url}/api/traffic", timeout=10, data=json.dumps(
                {"models": {"mlp": {"shadow": {"to": v - 1, "fraction": 0.5}}}})).raise_for_status()
            swaps += 1
            if swaps == 5:
                rss["after_5"] = _rss_mib(srv.proc.pid)
            shutil.rmtree(model_dir / str(v - 2), ignore_errors=True)  # keep the disk bounded, like a retention job
        rss[f"after_{swaps}"] = _rss_mib(srv.proc.pid)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        alive = srv.proc.poll() is None
        shadow = requests.get(f"{srv.rest_url}/api/traffic", timeout=10).json() if alive else {}
        code = srv.stop()
    during = [d for (ts, d) in latencies if any(a <= ts <= b + 0.5 for a, b in swap_windows)]
    all_lat = [d for _, d in latencies]
    p99_swap = float(np.percentile(during, 99)) * 1e3 if during else float("nan")
    p99_all = float(np.percentile(all_lat, 99)) * 1e3 if all_lat else float("nan")
    growth = rss.get(f"after_{swaps}", 0) - rss.get("after_5", rss["start"])
    print(f"requests sent:        {stats['sent']}")
    print(f"requests failed:      {stats['failed']}" + (f"  (first: {failures[0]})" if failures else ""))
    print(f"swaps done:           {swaps}")
    print(f"hostile inputs tried: {stats['hostile']} (unexpected answers: {stats['hostile_unexpected']})")
    print(f"p99 latency:          {p99_all:.2f} ms overall, {p99_swap:.2f} ms during swaps")
    sides = shadow.get("readings", {}).get("mlp", {}).get("shadow", {}).values()
    print(f"shadow calls:         {sum(v['requests'] for v in sides):.0f} answered, "
          f"{sum(v['errors'] for v in sides):.0f} errors, {sum(v['dropped'] for v in sides):.0f} dropped; "
          f"config in force {shadow.get('config')}")
    print("RSS:                  " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} MiB" for k, v in rss.items()))
    print(f"server alive after soak: {alive}; exit status after SIGTERM: {code}")
    print(f"duration:             {time.monotonic() - t_start:.0f} s")
    shutil.rmtree(work, ignore_errors=True)
    ok = (stats["failed"] == 0 and stats["hostile_unexpected"] == 0 and alive and code == 0
          and growth <= args.rss_margin_mib and sum(v["requests"] for v in sides) > 0)
    print("SOAK " + ("PASSED" if ok else f"FAILED (RSS growth after the 5th swap: {growth:.0f} MiB)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
