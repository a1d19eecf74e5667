"""Closed-loop load generator: `python -m tfsb.client.bench --protocol grpc --concurrency 8 --duration 10 ...`.

Workers run in their own processes (spawned, so no state is inherited from the caller), each with a few
threads that send one request at a time; all start together after a barrier and stop at the deadline.
Only the address given is targeted. Reports p50/p90/p99 latency, requests/s, rows/s and errors, and can
write the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass

import numpy as np
from tfsb import program_name

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@dataclass
class BenchResult:
    protocol: str
    model: str
    signature: str
    batch: int
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    rows_per_s: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    first_error: str = ""


def _make_inputs(spec: dict, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, t in spec.items():
        shape = [batch] + [1 if d in (-1, None) else d for d in (t["shape"] or [-1])[1:]]
        dt = t["dtype"]
        if dt == "DT_STRING":
            out[name] = np.array([b"x"] * int(np.prod(shape)), dtype=object).reshape(shape)
        elif dt in ("DT_INT64", "DT_INT32"):
            out[name] = rng.integers(0, 10, shape).astype(np.int64 if dt == "DT_INT64" else np.int32)
        else:
            out[name] = rng.random(shape, dtype=np.float32)
    return out


def parse_input_spec(spec: str) -> dict:
    """"x:DT_FLOAT:-1,10;age:DT_FLOAT:-1" → metadata-like input spec (for servers without metadata)."""
    out = {}
    for part in filter(None, spec.split(";")):
        name, dtype, dims = part.split(":")
        out[name] = {"dtype": dtype, "shape": [int(d) for d in dims.split(",")] if dims else []}
    return out


def _sender(protocol: str, target: str, model: str, signature: str, label: str | None, inputs: dict):
    """A callable sending one prebuilt request: the generator measures the server, not request building."""
    if protocol == "grpc":
        import grpc

        from tfsb import protos
        from tfsb.wire import tensor_proto

        channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1),
                                                         ("grpc.max_receive_message_length", -1)])
        predict = channel.unary_unary("/tensorflow.serving.PredictionService/Predict",
                                      request_serializer=protos.PredictRequest.SerializeToString,
                                      response_deserializer=protos.PredictResponse.FromString)
        req = protos.PredictRequest()
        req.model_spec.name = model
        req.model_spec.signature_name = signature
        if label:
            req.model_spec.version_label = label
        for k, v in inputs.items():
            tensor_proto.from_numpy(v, as_content=v.dtype != object, into=req.inputs[k])
        return lambda: predict(req, timeout=60)
    import orjson
    import requests

    session = requests.Session()
    url = f"{target}/v1/models/{model}" + (f"/labels/{label}" if label else "") + ":predict"
    n = len(next(iter(inputs.values())))
    rows = [{k: (v[i].tolist() if v.dtype != object else v[i].item().decode()) for k, v in inputs.items()}
            for i in range(n)]
    if len(inputs) == 1:
        rows = [next(iter(r.values())) for r in rows]
    body = orjson.dumps({"signature_name": signature, "instances": rows} if signature else {"instances": rows})

    def send():
        r = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]}")
        orjson.loads(r.content)

    return send


def _worker(protocol, target, model, signature, label, batch, threads, barrier, start_at, duration, queue, seed,
            input_spec):
    if input_spec is None:
        from tfsb.client import GrpcClient, RestClient

        c = GrpcClient(target) if protocol == "grpc" else RestClient(target)
        input_spec = c.metadata(model, label=label)["signature_def"][signature or "serving_default"]["inputs"]
    inputs = _make_inputs(input_spec, batch, seed)
    send = _sender(protocol, target, model, signature, label, inputs)
    send()  # connect + warm before the clock
    results: list = []
    lock = threading.Lock()
    barrier.wait()
    t_start = start_at.value
    while time.time() < t_start:
        time.sleep(0.0005)
    deadline = time.perf_counter() + duration

    def loop():
        lat, errors, first = [], 0, ""
        while True:
            t0 = time.perf_counter()
            if t0 >= deadline:
                break
            try:
                send()
                lat.append(time.perf_counter() - t0)
            except Exception as e:  # noqa: BLE001 - counted, not fatal
                errors += 1
                first = first or f"{type(e).__name__}: {e}"[:300]
        with lock:
            results.append((lat, errors, first))

    ts = [threading.Thread(target=loop) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    lat = [x for r in results for x in r[0]]
    queue.put((lat, sum(r[1] for r in results), next((r[2] for r in results if r[2]), "")))


def run(protocol: str, target: str, model: str, *, signature: str = "", label: str | None = None, batch: int = 1,
        concurrency: int = 1, duration: float = 10.0, processes: int | None = None, seed: int = 0,
        input_spec: dict | None = None) -> BenchResult:
    ctx = mp.get_context("spawn")
    procs = max(1, min(processes or concurrency, concurrency, os.cpu_count() or 1))
    per = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    barrier = ctx.Barrier(procs + 1)
    start_at = ctx.Value("d", 0.0)
    queue = ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(protocol, target, model, signature, label, batch, n, barrier, start_at,
                                            duration, queue, seed + i, input_spec), daemon=True)
          for i, n in enumerate(per)]
    for p in ps:
        p.start()
    barrier.wait(timeout=300)
    start_at.value = time.time() + 0.2
    outs = [queue.get(timeout=duration + 300) for _ in ps]
    for p in ps:
        p.join(30)
    lat = np.array([x for o in outs for x in o[0]]) * 1e3
    errors = sum(o[1] for o in outs)
    n = len(lat)
    pct = np.percentile(lat, [50, 90, 99]) if n else [float("nan")] * 3
    return BenchResult(protocol, model, signature or "serving_default", batch, concurrency, duration, n, errors,
                       round(n / duration, 1), round(n * batch / duration, 1), round(float(pct[0]), 3),
                       round(float(pct[1]), 3), round(float(pct[2]), 3), next((o[2] for o in outs if o[2]), ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=program_name("tfsb.client.bench"), description=__doc__)
    p.add_argument("--protocol", choices=["grpc", "rest"], default="grpc")
    p.add_argument("--target", help="host:port for gRPC, http://host:port for REST (defaults to localhost)")
    p.add_argument("--model", default="mlp")
    p.add_argument("--signature", default="")
    p.add_argument("--label")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0, help="seconds (bounded to 600)")
    p.add_argument("--processes", type=int)
    p.add_argument("--input", help='input spec for servers without metadata, e.g. "x:DT_FLOAT:-1,10"')
    p.add_argument("--json-out", help="write the result as JSON to this file")
    args = p.parse_args(argv)
    target = args.target or ("localhost:8500" if args.protocol == "grpc" else "http://localhost:8501")
    res = run(args.protocol, target, args.model, signature=args.signature, label=args.label, batch=args.batch,
              concurrency=args.concurrency, duration=min(args.duration, 600.0), processes=args.processes,
              input_spec=parse_input_spec(args.input) if args.input else None)
    print(f"{res.protocol} {res.model}/{res.signature} batch={res.batch} concurrency={res.concurrency}: "
          f"{res.requests} requests in {res.duration_s:.0f}s, {res.rps} req/s, {res.rows_per_s} rows/s, "
          f"p50={res.p50_ms}ms p90={res.p90_ms}ms p99={res.p99_ms}ms, errors={res.errors}"
          + (f" (first: {res.first_error})" if res.errors else ""))
    if args.json_out:
        with open(args.json_out, "w") as fh:
            json.dump(asdict(res), fh, indent=2)
    return 0 if res.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
