"""`make bench`: what a request costs the *server*, measured with native load generators.

Each server runs pinned to CPU 0 and the load generator (wrk for REST, h2load for gRPC, both native) to CPU 1,
so the numbers are the server's, not the load generator's. For every scenario the server's CPU time (utime +
stime of all its threads, from /proc) is divided by the requests it answered: **server CPU µs per request**,
beside req/s and latency percentiles. Servers: the project's (`python -m tfsb.server`), the hand-written peers
(FastAPI, grpcio + TF2 signature function) and the transport floors (raw uvicorn ASGI; for gRPC both a grpcio
sync server and a `grpc.aio` one, all answering canned bytes; the project is set against the lower gRPC floor).
Scenarios run interleaved for several rounds; medians are reported.

Every run is checked for real successes: wrk's Lua script counts responses that are not 200 or lack the
expected key; for gRPC (h2load sees only HTTP 200 either way) the response data bytes must add up to one full
PredictResponse per request — a gRPC error is a trailers-only reply with no data.

With --processes N it also compares N server processes sharing the ports (`--num_server_processes`) with one,
unpinned, at the same client concurrency; there the load generator shares the server's cores, so wrk runs
without its per-response Lua hook and successes are read from the server's own request counter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tests.server_util import free_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SCENARIOS = [("REST", 1), ("REST", 64), ("gRPC", 1), ("gRPC", 64)]
PY = sys.executable


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def pinned(cpu: int, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", str(cpu), *cmd] if _cpus() >= 2 and shutil.which("taskset") else cmd


def process_tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{t}/children").read_text().split()
                todo.extend(int(k) for k in kids)
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its descendants (all threads), in seconds."""
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


class Proc:
    def __init__(self, cmd: list[str], port: int, log: Path, also: tuple[int, ...] = ()):
        self.port = port
        self._log = open(log, "w")
        self.p = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO)),
                                  start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.p.poll() is not None:
                raise RuntimeError(f"{cmd} exited: {log.read_text()[-2000:]}")
            try:
                for p in (port, *also):
                    socket.create_connection(("127.0.0.1", p), 0.2).close()
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"{cmd} not listening on {port}")

    def stop(self) -> None:
        try:
            os.killpg(self.p.pid, signal.SIGTERM)
            self.p.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.p.pid, signal.SIGKILL)
        self._log.close()


# ---------------------------------------------------------------------------------------------- requests

def inputs(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).random((batch, 10), dtype=np.float32)


def rest_body(batch: int) -> bytes:
    return json.dumps({"instances": inputs(batch).tolist()}).encode()


def grpc_request(batch: int) -> bytes:
    from tensorflow_serving.apis import predict_pb2

    from tfsb.wire.tensor_proto import from_numpy

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "mlp"
    from_numpy(inputs(batch), as_content=True, into=req.inputs["x"])
    return req.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_reply(port: int, message: bytes) -> bytes:
    """One real call with the benchmark's exact bytes: the serialized reply (also the floor's canned one)."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary("/tensorflow.serving.PredictionService/Predict", request_serializer=None,
                              response_deserializer=None)
        return call(message, timeout=30)


def rest_reply(port: int, body: bytes) -> bytes:
    import requests

    r = requests.post(f"http://127.0.0.1:{port}/v1/models/mlp:predict", data=body, timeout=30)
    r.raise_for_status()
    return r.content


# ---------------------------------------------------------------------------------------------- load

WRK_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("%(body)s", "rb"):read("*a")
local bad = 0
response = function(status, headers, body)
  if status ~= 200 or not string.find(body, "predictions", 1, true) then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("BAD %%d\\n", bad))
  io.write(string.format("P50 %%.0f\\nP99 %%.0f\\n", latency:percentile(50), latency:percentile(99)))
end
"""


# Without the per-response Lua hook wrk costs far less CPU: for runs that share the server's cores (the
# multi-process comparison), where successes are counted by the server's own metrics instead.
WRK_LUA_LIGHT = WRK_LUA.split("local bad = 0")[0] + """
done = function(summary, latency, requests)
  io.write("BAD 0\\n")
  io.write(string.format("P50 %%.0f\\nP99 %%.0f\\n", latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(port: int, body: bytes, seconds: float, conns: int, tmp: Path, cpu: int | None = 1,
            light: bool = False) -> dict:
    (tmp / "body.json").write_bytes(body)
    (tmp / "post.lua").write_text((WRK_LUA_LIGHT if light else WRK_LUA) % {"body": tmp / "body.json"})
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "-s", str(tmp / "post.lua"),
           f"http://127.0.0.1:{port}/v1/models/mlp:predict"]
    res = subprocess.run(pinned(cpu, cmd) if cpu is not None else cmd, capture_output=True, text=True,
                         timeout=seconds + 60)
    out = res.stdout
    if not re.search(r"(\d+) requests in", out) or "BAD" not in out:
        raise RuntimeError(f"wrk failed: {res.stdout[-1500:]} {res.stderr[-1500:]}")
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = int(re.search(r"BAD (\d+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {"requests": total, "failed": bad + (int(errors.group(1)) if errors else 0)
            + (sum(map(int, socket_errors.groups())) if socket_errors else 0),
            "p50_ms": int(re.search(r"P50 (\d+)", out).group(1)) / 1000,
            "p99_ms": int(re.search(r"P99 (\d+)", out).group(1)) / 1000}


def run_h2load(port: int, frame: bytes, reply_len: int, seconds: float, conns: int, tmp: Path,
               cpu: int | None = 1) -> dict:
    (tmp / "frame.bin").write_bytes(frame)
    log = tmp / "h2load.log"
    cmd = ["h2load", "-c", str(conns), "-m", "1", "-t", "1", "-D", str(int(seconds)), "-d", str(tmp / "frame.bin"),
           "-H", "content-type: application/grpc", "-H", "te: trailers", "--log-file", str(log),
           f"http://127.0.0.1:{port}/tensorflow.serving.PredictionService/Predict"]
    out = subprocess.run(pinned(cpu, cmd) if cpu is not None else cmd, capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                  out)
    done, succeeded = int(m.group(3)), int(m.group(4))
    data = int(re.search(r"\((\d+)\) data", out).group(1))
    # a successful gRPC reply carries a 5-byte frame header and the message; an error carries no data
    real = min(succeeded, data // (reply_len + 5))
    lat = sorted(int(line.split()[2]) for line in log.read_text().splitlines() if line.strip())
    return {"requests": done, "failed": done - real,
            "p50_ms": lat[len(lat) // 2] / 1000 if lat else float("nan"),
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] / 1000 if lat else float("nan")}


def _children_cpu() -> float:
    """CPU seconds of this process's finished children: the load generator runs (the servers are still
    running, so they are not counted)."""
    import resource

    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def measure(proc: Proc, transport: str, payload: bytes, reply_len: int, seconds: float, conns: int,
            tmp: Path, cpu: int | None = 1, ok_count=None) -> dict:
    """`ok_count`: a callable reading the server's successful-request counter; given, REST uses the light wrk
    script and the successes are the counter's increase."""
    light = ok_count is not None
    run = (lambda s: run_wrk(proc.port, payload, s, conns, tmp, cpu, light)) if transport == "REST" else \
        (lambda s: run_h2load(proc.port, grpc_frame(payload), reply_len, s, conns, tmp, cpu))
    run(1)  # warm-up, not recorded
    ok0 = ok_count() if light else 0
    g0 = _children_cpu()
    c0, t0 = cpu_seconds(proc.p.pid), time.monotonic()
    r = run(seconds)
    c1, t1 = cpu_seconds(proc.p.pid), time.monotonic()
    # cores each side used: on a 2-core host the load generator's share is what the server cannot have
    r["server_cores"], r["loadgen_cores"] = (c1 - c0) / (t1 - t0), (_children_cpu() - g0) / (t1 - t0)
    if light and transport == "REST":
        r["failed"] += max(0, r["requests"] - (ok_count() - ok0))
    r["rps"] = r["requests"] / (t1 - t0)
    r["cpu_us"] = (c1 - c0) / max(1, r["requests"]) * 1e6
    return r


# ---------------------------------------------------------------------------------------------- servers

def project_cmd(port: int, rest_port: int, base: Path, extra: list[str] = ()) -> list[str]:
    return [PY, "-m", "tfsb.server", f"--port={port}", f"--rest_api_port={rest_port}", "--model_name=mlp",
            f"--model_base_path={base / 'mlp'}", *extra]


def start_server(kind: str, transport: str, base: Path, tmp: Path) -> Proc:
    port = free_port()
    if kind == "project":
        rest_port = free_port()
        p = Proc(pinned(0, project_cmd(port, rest_port, base)), port, tmp / "project.log", also=(rest_port,))
        p.rest_port = rest_port
        return p
    script = "fastapi_peer.py" if transport == "REST" else "grpc_peer.py"
    return Proc(pinned(0, [PY, str(REPO / "benchmarks" / "peers" / script), f"--port={port}",
                           f"--model=mlp={base / 'mlp' / '1'}"]), port, tmp / f"peer-{transport}.log")


def median_row(rows: list[dict]) -> dict:
    keys = ("rps", "cpu_us", "p50_ms", "p99_ms", "server_cores", "loadgen_cores")
    out = {k: statistics.median(r[k] for r in rows) for k in keys}
    out["requests"] = sum(r["requests"] for r in rows)
    out["failed"] = sum(r["failed"] for r in rows)
    out["cpu_us_runs"] = [round(r["cpu_us"], 1) for r in rows]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--processes", type=int, default=2, help="also compare N server processes with one (0: skip)")
    ap.add_argument("--shadow", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure the live answers' latency with 10%% of requests mirrored to another version")
    ap.add_argument("--out", default=str(REPO / "results"))
    args = ap.parse_args(argv)
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            print(f"{tool} not found: run `make bench` (installs wrk and nghttp2-client)", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "bench-models"
    from benchmarks.run import export_models

    export_models(base)
    tmp = Path(tempfile.mkdtemp(prefix="bench-native-"))
    payloads = {("REST", b): rest_body(b) for b in (1, 64)} | {("gRPC", b): grpc_request(b) for b in (1, 64)}
    runs: dict[tuple, list[dict]] = {}
    try:
        # the project's real replies: the floors answer exactly these bytes
        p = start_server("project", "gRPC", base, tmp)
        replies = {("gRPC", b): grpc_reply(p.port, payloads[("gRPC", b)]) for b in (1, 64)}
        replies |= {("REST", b): rest_reply(p.rest_port, payloads[("REST", b)]) for b in (1, 64)}
        p.stop()
        for rnd in range(args.rounds):
            for transport, batch in SCENARIOS:
                key = (transport, batch)
                for kind in ("project", "peer", "floor") + (("floor_aio",) if transport == "gRPC" else ()):
                    if kind.startswith("floor"):
                        (tmp / "reply.bin").write_bytes(replies[key])
                        port = free_port()
                        script = {"floor": "floor_asgi.py" if transport == "REST" else "floor_grpc.py",
                                  "floor_aio": "floor_grpc_aio.py"}[kind]
                        proc = Proc(pinned(0, [PY, str(REPO / "benchmarks" / "peers" / script), f"--port={port}",
                                               f"--reply={tmp / 'reply.bin'}"]), port, tmp / "floor.log")
                    else:
                        proc = start_server(kind, transport, base, tmp)
                        if kind == "project" and transport == "REST":
                            proc.port = proc.rest_port
                    try:
                        reply_len = len(replies[key]) if kind != "peer" or transport == "REST" else \
                            len(grpc_reply(proc.port, payloads[key]))
                        r = measure(proc, transport, payloads[key], reply_len, args.seconds, args.connections, tmp)
                    finally:
                        proc.stop()
                    runs.setdefault((kind, transport, batch), []).append(r)
                    print(f"round {rnd + 1} {kind:8} {transport:4} b{batch:<3} {r['cpu_us']:8.1f} µs/req "
                          f"{r['rps']:8.0f} req/s p99 {r['p99_ms']:.2f} ms failed {r['failed']}", flush=True)
        scaling = multi_process(base, tmp, payloads, replies, args) if args.processes > 1 else None
        shadow = shadow_cost(base, tmp, payloads, replies, args) if args.shadow else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results = {f"{k}|{t}|b{b}": median_row(v) for (k, t, b), v in runs.items()}
    report = render(results, scaling, args) + render_shadow(shadow)
    (out / "native.json").write_text(json.dumps({"results": results, "scaling": scaling, "shadow": shadow,
                                                 "machine": machine()}, indent=1))
    (out / "native.md").write_text(report)
    print(report)
    chart(results, out / "native.png")
    failed = sum(r["failed"] for r in results.values()) + (sum(s["failed"] for s in scaling.values())
                                                           if scaling else 0)
    return 1 if failed else 0


def multi_process(base: Path, tmp: Path, payloads, replies, args) -> dict:
    """One server process vs N on the same ports, unpinned (N processes need N cores), same client load."""
    out = {}
    for transport in ("REST", "gRPC"):
        for n in (1, args.processes):
            grpc_port, rest_port = free_port(), free_port()
            (tmp / "monitoring.config").write_text('prometheus_config { enable: true, path: "/metrics" }\n')
            extra = [f"--monitoring_config_file={tmp / 'monitoring.config'}"]
            extra += [f"--num_server_processes={n}"] if n > 1 else []
            port = rest_port if transport == "REST" else grpc_port
            proc = Proc(project_cmd(grpc_port, rest_port, base, extra), port, tmp / f"multi-{n}.log",
                        also=(grpc_port, rest_port))
            try:
                time.sleep(2 if n > 1 else 0)  # every worker has bound (the first one answering is not enough)
                rows = [measure(proc, transport, payloads[(transport, 1)], len(replies[(transport, 1)]),
                                args.seconds, args.connections * 2, tmp, cpu=None,
                                ok_count=lambda: ok_requests(rest_port)) for _ in range(args.rounds)]
            finally:
                proc.stop()
            out[f"{transport}|{n}"] = median_row(rows)
            print(f"{transport} b1, {n} process(es): {out[f'{transport}|{n}']['rps']:.0f} req/s", flush=True)
    return out


def shadow_cost(base: Path, tmp: Path, payloads, replies, args) -> dict:
    """Live latency and server CPU at batch 1 with no traffic config, and with 10 % of live requests mirrored
    to another version (a copy of the same model as version 2: the shadow does the same work again)."""
    models = tmp / "shadow-models" / "mlp"
    for v in ("1", "2"):
        if not (models / v).exists():
            shutil.copytree(base / "mlp" / "1", models / v)
    (tmp / "shadow.config").write_text(
        'model_config_list { config { name: "mlp" base_path: "%s" model_platform: "tensorflow" '
        'model_version_policy { specific { versions: 1 versions: 2 } } } }\n' % models)
    (tmp / "traffic.json").write_text('{"models": {"mlp": {"shadow": {"to": 1, "fraction": 0.1}}}}')
    out: dict = {}
    for rnd in range(args.rounds):
        for transport in ("REST", "gRPC"):
            for variant in ("off", "10%"):
                port, rest_port = free_port(), free_port()
                extra = [f"--traffic_config_file={tmp / 'traffic.json'}"] if variant != "off" else []
                cmd = [PY, "-m", "tfsb.server", f"--port={port}", f"--rest_api_port={rest_port}",
                       f"--model_config_file={tmp / 'shadow.config'}", *extra]
                proc = Proc(pinned(0, cmd), port, tmp / "shadow.log", also=(rest_port,))
                if transport == "REST":
                    proc.port = rest_port
                try:
                    r = measure(proc, transport, payloads[(transport, 1)], len(replies[(transport, 1)]),
                                args.seconds, args.connections, tmp)
                finally:
                    proc.stop()
                out.setdefault(f"{transport}|{variant}", []).append(r)
                print(f"round {rnd + 1} shadow {variant:3} {transport:4} b1 {r['cpu_us']:8.1f} µs/req "
                      f"{r['rps']:8.0f} req/s p99 {r['p99_ms']:.2f} ms failed {r['failed']}", flush=True)
    return {k: median_row(v) for k, v in out.items()}


def render_shadow(shadow: dict | None) -> str:
    if not shadow:
        return ""
    lines = ["", "### Shadow traffic: live answers with 10 % of requests mirrored to another version "
                 "(batch 1, server pinned to CPU 0)", "",
             "| transport | p50 / p99 ms, no shadow | p50 / p99 ms, 10 % shadow | p99 ratio | req/s off / on "
             "| CPU µs/req off / on | failed |", "|---|---|---|---|---|---|---|"]
    for t in ("REST", "gRPC"):
        a, b = shadow[f"{t}|off"], shadow[f"{t}|10%"]
        lines.append(f"| {t} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} | {b['p50_ms']:.2f} / {b['p99_ms']:.2f} | "
                     f"{b['p99_ms'] / a['p99_ms']:.2f}× | {a['rps']:.0f} / {b['rps']:.0f} | "
                     f"{a['cpu_us']:.0f} / {b['cpu_us']:.0f} | {a['failed'] + b['failed']} |")
    return "\n".join(lines) + "\n"


def ok_requests(rest_port: int) -> int:
    """The server's `request_count{model_name="mlp",status="OK"}` (summed over workers)."""
    import requests

    text = requests.get(f"http://127.0.0.1:{rest_port}/metrics", headers={"Connection": "close"}, timeout=30).text
    for line in text.splitlines():
        if line.startswith(':tensorflow:serving:request_count{model_name="mlp",status="OK"}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{_cpus()} CPUs ({model})"


def floor_of(results: dict, t: str, b: int) -> float:
    """The lower transport floor's CPU µs per request (gRPC: sync grpcio or grpc.aio, whichever is cheaper)."""
    return min(results[f"{k}|{t}|b{b}"]["cpu_us"] for k in ("floor", "floor_aio") if f"{k}|{t}|b{b}" in results)


# Issue 25's targets: (scenario, peer ÷ project at least, project ÷ lower floor at most)
TARGETS = {("REST", 1): (4.0, 3.0), ("REST", 64): (3.0, None), ("gRPC", 1): (2.8, 1.3), ("gRPC", 64): (2.5, None)}


def render(results: dict, scaling: dict | None, args) -> str:
    def g(kind, t, b, k):
        return results[f"{kind}|{t}|b{b}"][k]

    lines = [f"Machine: {machine()}. Server pinned to CPU 0, load generator (wrk / h2load) to CPU 1; "
             f"{args.connections} connections; {args.rounds} interleaved rounds of {args.seconds:g} s, medians.",
             "", "### Server CPU per request (µs; lower is better)", "",
             "| scenario | project | hand-written peer | transport floor (gRPC: sync / aio) | peer ÷ project "
             "| project ÷ lower floor | target |",
             "|---|---|---|---|---|---|---|"]
    for t, b in SCENARIOS:
        pr, pe = g("project", t, b, "cpu_us"), g("peer", t, b, "cpu_us")
        fl = floor_of(results, t, b)
        floors = f"{g('floor', t, b, 'cpu_us'):.0f}" + (f" / {g('floor_aio', t, b, 'cpu_us'):.0f}"
                                                         if f"floor_aio|{t}|b{b}" in results else "")
        want_peer, want_floor = TARGETS[(t, b)]
        met = pe / pr >= want_peer and (want_floor is None or pr / fl <= want_floor)
        target = f"peer ÷ project ≥ {want_peer:g}" + (f", ÷ floor ≤ {want_floor:g}" if want_floor else "")
        lines.append(f"| {t} batch {b} | {pr:.0f} | {pe:.0f} | {floors} | {pe / pr:.2f}× | {pr / fl:.2f}× | "
                     f"{target}: {'met' if met else 'missed'} |")
    lines += ["", "### Throughput and latency (same runs)", "",
              "| scenario | project req/s | p50 / p99 ms | peer req/s | p50 / p99 ms | floor req/s | failed |",
              "|---|---|---|---|---|---|---|"]
    for t, b in SCENARIOS:
        kinds = [k for k in ("project", "peer", "floor", "floor_aio") if f"{k}|{t}|b{b}" in results]
        f = sum(results[f"{k}|{t}|b{b}"]["failed"] for k in kinds)
        lines.append(f"| {t} batch {b} | {g('project', t, b, 'rps'):.0f} | {g('project', t, b, 'p50_ms'):.2f} / "
                     f"{g('project', t, b, 'p99_ms'):.2f} | {g('peer', t, b, 'rps'):.0f} | "
                     f"{g('peer', t, b, 'p50_ms'):.2f} / {g('peer', t, b, 'p99_ms'):.2f} | "
                     f"{g('floor', t, b, 'rps'):.0f} | {f} |")
    if scaling:
        n = args.processes
        lines += ["", f"### {n} server processes on the same ports vs 1 (unpinned, batch 1, "
                      f"{args.connections * 2} connections)", "",
                  "| transport | 1 process req/s | " + f"{n} processes req/s | ratio | target ≥ 1.6× "
                  "| server cores used 1 / n | load generator cores 1 / n | req/s per server core 1 / n |",
                  "|---|---|---|---|---|---|---|---|"]
        for t in ("REST", "gRPC"):
            one, many = scaling[f"{t}|1"], scaling[f"{t}|{n}"]
            a, b = one["rps"], many["rps"]
            lines.append(f"| {t} | {a:.0f} | {b:.0f} | {b / a:.2f}× | {'met' if b / a >= 1.6 else 'missed'} | "
                         f"{one['server_cores']:.2f} / {many['server_cores']:.2f} | "
                         f"{one['loadgen_cores']:.2f} / {many['loadgen_cores']:.2f} | "
                         f"{a / one['server_cores']:.0f} / {b / many['server_cores']:.0f} |")
    return "\n".join(lines) + "\n"


def chart(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{t} b{b}" for t, b in SCENARIOS]
    peer = [results[f"peer|{t}|b{b}"]["cpu_us"] / results[f"project|{t}|b{b}"]["cpu_us"] for t, b in SCENARIOS]
    floor = [results[f"project|{t}|b{b}"]["cpu_us"] / floor_of(results, t, b) for t, b in SCENARIOS]
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = np.arange(len(labels))
    ax.bar(xs - 0.2, peer, 0.4, label="peer CPU ÷ project CPU (higher: project cheaper)")
    ax.bar(xs + 0.2, floor, 0.4, label="project CPU ÷ transport floor CPU (lower: closer to the floor)")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(xs, labels)
    ax.set_ylabel("ratio of server CPU per request")
    ax.set_title(f"Server CPU per request, mlp model — {machine()}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
