"""`make bench`: the embedded server next to the in-process floor and two hand-written peers.

Every server runs in its own process on loopback; the load generator (`tfsb.client.bench`, closed loop, its
own processes) drives each scenario for --duration seconds. Writes results/bench.json, results/bench.md
and results/bench.png, prints the table, then the ratios the performance targets are stated in.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfsb.client.bench import parse_input_spec, run  # noqa: E402
from tests.server_util import free_port  # noqa: E402

SCENARIOS = [  # (id, model, batch, concurrency)
    ("b1-c1", "mlp", 1, 1),
    ("b1-c8", "mlp", 1, 8),
    ("b1-c32", "mlp", 1, 32),
    ("b64-c4", "mlp", 64, 4),
    ("large-b1-c1", "large", 1, 1),
]
INPUTS = {"mlp": "x:DT_FLOAT:-1,10", "large": "x:DT_FLOAT:-1,784"}


def export_models(base: Path) -> dict[str, Path]:
    """mlp (10→64→32→1, the demo model) and a larger 784→512→10 model, published like the zoo."""
    import keras
    import tensorflow as tf

    from tfsb.export.publish import publish
    from tfsb.export.zoo import Endpoint, TrainedModel, build_mlp

    paths = {}
    if not (base / "mlp" / "1").exists():
        publish(build_mlp(1), base, version=1)
    paths["mlp"] = base / "mlp" / "1"
    if not (base / "large" / "1").exists():
        keras.utils.set_random_seed(0)
        inp = keras.Input((784,), name="x")
        h = keras.layers.Dense(512, activation="relu")(inp)
        model = keras.Model(inp, keras.layers.Dense(10, activation="softmax")(h))

        def serve(x):
            return {"y": model(x, training=False)}

        publish(TrainedModel("large", model, {"serving_default": Endpoint(
            serve, (tf.TensorSpec([None, 784], tf.float32, name="x"),))},
            samples={"serving_default": {"x": np.ones((2, 784), np.float32)}}), base, version=1)
    paths["large"] = base / "large" / "1"
    return paths


def in_process_floor(paths: dict[str, Path], duration: float) -> list[dict]:
    """The model call alone, no transport: our TF1-session callable (what the embedded server runs) and
    the TF2 signature function (what most hand-written servers run)."""
    import tensorflow as tf

    from tfsb.server.runtime import SavedModelServable

    rows = []
    for sid, model, batch, _ in SCENARIOS:
        if sid in ("b1-c8", "b1-c32"):
            continue
        x = np.random.default_rng(0).random((batch, 784 if model == "large" else 10), dtype=np.float32)
        servable = SavedModelServable(paths[model])
        sig = servable.signatures["serving_default"]
        fn = tf.saved_model.load(str(paths[model])).signatures["serving_default"]
        for server, call in (("in-process (session callable)", lambda: servable.run_signature(sig, {"x": x}, ("y",))),
                             ("in-process (TF2 signature)", lambda: fn(x=tf.constant(x)))):
            for _ in range(50):
                call()
            lat = []
            end = time.perf_counter() + duration
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                call()
                lat.append(time.perf_counter() - t0)
            lat_ms = np.array(lat) * 1e3
            n = len(lat)
            rows.append({"server": server, "scenario": sid, "batch": batch, "concurrency": 1, "requests": n,
                         "errors": 0, "rps": round(n / duration, 1), "rows_per_s": round(n * batch / duration, 1),
                         "p50_ms": round(float(np.percentile(lat_ms, 50)), 3),
                         "p90_ms": round(float(np.percentile(lat_ms, 90)), 3),
                         "p99_ms": round(float(np.percentile(lat_ms, 99)), 3), "cpu_cores": 1.0})
        servable.close()
    return rows


def _cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, cmd: list[str], protocol: str, target: str, ready: str):
        self.name, self.protocol, self.target = name, protocol, target
        self.log = open(REPO / "results" / f"server-{name.replace(' ', '_').replace('/', '_')}.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        deadline = time.time() + 180
        import requests

        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited: {Path(self.log.name).read_text()[-2000:]}")
            try:
                if ready.startswith("http"):
                    if requests.get(ready, timeout=1).status_code < 500:
                        return
                elif "ready" in Path(self.log.name).read_text():
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise TimeoutError(name)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_servers(paths: dict[str, Path], base: Path, batching_file: Path) -> list[Server]:
    py = sys.executable
    servers = []
    cfg = REPO / "results" / "bench-models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{m}" base_path: "{base / m}" model_platform: "tensorflow" }}\n' for m in paths) + "}\n")
    for label, extra in (("embedded", []), ("embedded+batching", ["--enable_batching",
                                                                  f"--batching_parameters_file={batching_file}"])):
        g, r = free_port(), free_port()
        cmd = [py, "-m", "tfsb.server", f"--port={g}", f"--rest_api_port={r}", f"--model_config_file={cfg}", *extra]
        srv = Server(label, cmd, "both", "", f"http://127.0.0.1:{r}/readyz")
        srv.targets = {"grpc": f"127.0.0.1:{g}", "rest": f"http://127.0.0.1:{r}"}
        servers.append(srv)
    models = [f"--model={m}={p}" for m, p in paths.items()]
    g = free_port()
    srv = Server("grpcio peer", [py, "-m", "benchmarks.peers.grpc_peer", f"--port={g}", *models], "grpc", "", "log")
    srv.targets = {"grpc": f"127.0.0.1:{g}"}
    servers.append(srv)
    r = free_port()
    srv = Server("FastAPI peer", [py, "-m", "benchmarks.peers.fastapi_peer", f"--port={r}", *models], "rest", "",
                 f"http://127.0.0.1:{r}/docs")
    srv.targets = {"rest": f"http://127.0.0.1:{r}"}
    servers.append(srv)
    return servers


def render(rows: list[dict], machine: str) -> str:
    lines = [f"Machine: {machine}", "",
             "| server | protocol | scenario | batch | conc. | req/s | rows/s | p50 ms | p90 ms | p99 ms | errors | "
             "server CPU (cores) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | {r.get('protocol', '-')} | {r['scenario']} | {r['batch']} | "
                     f"{r['concurrency']} | {r['rps']:.0f} | {r['rows_per_s']:.0f} | {r['p50_ms']:.3f} | "
                     f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['errors']} | {r.get('cpu_cores', float('nan')):.2f} |")
    return "\n".join(lines)


_SCENARIO_LABELS = {"b1-c1": "batch 1\n1 client", "b1-c8": "batch 1\n8 clients", "b1-c32": "batch 1\n32 clients",
                    "b64-c4": "batch 64\n4 clients", "large-b1-c1": "784 floats\n1 client"}


def chart_ratios(rows: list[dict]) -> dict[str, list[float]]:
    """Rows/s of the embedded server divided by each peer's, per scenario (>1: the embedded server is faster)."""
    def get(server, proto, scen):
        return next((r["rows_per_s"] for r in rows if r["server"] == server and r.get("protocol", "-") == proto
                     and r["scenario"] == scen), float("nan"))

    scen = [s[0] for s in SCENARIOS]
    return {
        "embedded gRPC / grpcio peer": [get("embedded", "grpc", s) / get("grpcio peer", "grpc", s) for s in scen],
        "embedded gRPC+batching / grpcio peer": [get("embedded+batching", "grpc", s) / get("grpcio peer", "grpc", s)
                                                 for s in scen],
        "embedded REST / FastAPI peer": [get("embedded", "rest", s) / get("FastAPI peer", "rest", s) for s in scen],
        "embedded gRPC / in-process floor": [get("embedded", "grpc", s) /
                                             get("in-process (session callable)", "-", s) for s in scen],
    }


def chart(rows: list[dict], path: Path, machine: str = "") -> None:
    """Ratios against each peer and the in-process floor (linear scale, 1.0 marked), scenarios labelled,
    the machine named in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scen = [s[0] for s in SCENARIOS]
    series = chart_ratios(rows)
    fig, ax = plt.subplots(figsize=(13, 6))
    width = 0.8 / len(series)
    for i, (label, vals) in enumerate(series.items()):
        xs = np.arange(len(scen)) + i * width
        bars = ax.bar(xs, [0 if np.isnan(v) else v for v in vals], width, label=label)
        for b, v in zip(bars, vals):
            if not np.isnan(v):
                ax.annotate(f"{v:.2f}x", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=7)
    ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(np.arange(len(scen)) + 0.4 - width / 2)
    ax.set_xticklabels([_SCENARIO_LABELS.get(s, s) for s in scen])
    ax.set_ylabel("throughput ratio (rows/s), >1 = embedded server faster")
    ax.set_title(f"tf-serving-bundle embedded server vs peers (mlp / large model, load generator on the same "
                 f"machine)\n{machine}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def ratios(rows: list[dict]) -> list[str]:
    def get(server, proto, scen, key="rps"):
        return next((r[key] for r in rows if r["server"] == server and r.get("protocol", "-") == proto
                     and r["scenario"] == scen), float("nan"))

    floor_b1 = get("in-process (session callable)", "-", "b1-c1", "p50_ms")
    out = []

    def line(desc, value, target):
        out.append(f"{desc}: {value:.2f} (target {target}) -> {'MET' if value >= target else 'NOT MET'}")

    line("gRPC b1 c1 rps vs grpcio peer", get("embedded", "grpc", "b1-c1") / get("grpcio peer", "grpc", "b1-c1"), 2.5)
    out.append(f"gRPC b1 c1 p50 minus in-process session call p50: "
               f"{get('embedded', 'grpc', 'b1-c1', 'p50_ms') - floor_b1:.3f} ms (target <= 0.4)")
    line("gRPC b1 c8 rps with batching vs grpcio peer",
         get("embedded+batching", "grpc", "b1-c8") / get("grpcio peer", "grpc", "b1-c8"), 3.0)
    line("gRPC b64 c4 rows/s vs grpcio peer",
         get("embedded", "grpc", "b64-c4", "rows_per_s") / get("grpcio peer", "grpc", "b64-c4", "rows_per_s"), 3.0)
    line("gRPC b64 c4 rows/s vs in-process floor (session callable)",
         get("embedded", "grpc", "b64-c4", "rows_per_s") / get("in-process (session callable)", "-", "b64-c4",
                                                               "rows_per_s"), 0.6)
    line("REST b1 c1 rps vs FastAPI peer", get("embedded", "rest", "b1-c1") / get("FastAPI peer", "rest", "b1-c1"), 1.5)
    line("REST b1 c8 rps vs FastAPI peer", get("embedded", "rest", "b1-c8") / get("FastAPI peer", "rest", "b1-c8"), 2.0)
    errors = sum(r["errors"] for r in rows)
    out.append(f"errors in all scenarios: {errors} (target 0) -> {'MET' if errors == 0 else 'NOT MET'}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per scenario")
    ap.add_argument("--out", default=str(REPO / "results"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    base = out / "bench-models"
    paths = export_models(base)
    batching = out / "bench-batching.config"
    batching.write_text("max_batch_size { value: 256 }\nbatch_timeout_micros { value: 0 }\n"
                        "max_enqueued_batches { value: 1000 }\nnum_batch_threads { value: 2 }\n")
    rows = in_process_floor(paths, args.duration)
    servers = start_servers(paths, base, batching)
    try:
        for srv in servers:
            for proto, target in srv.targets.items():
                for sid, model, batch, conc in SCENARIOS:
                    cpu0, w0 = _cpu_seconds(srv.proc.pid), time.monotonic()
                    res = run(proto, target, model, batch=batch, concurrency=conc, duration=args.duration,
                              input_spec=parse_input_spec(INPUTS[model]))
                    cpu = (_cpu_seconds(srv.proc.pid) - cpu0) / max(1e-9, time.monotonic() - w0)
                    row = {"server": srv.name, "protocol": proto, "scenario": sid, **asdict(res),
                           "cpu_cores": round(cpu, 2)}
                    rows.append(row)
                    print(f"{srv.name:<18} {proto:<4} {sid:<12} {res.rps:>8.0f} req/s {res.rows_per_s:>9.0f} rows/s "
                          f"p50 {res.p50_ms:.3f} p99 {res.p99_ms:.3f} ms errors {res.errors}", flush=True)
    finally:
        for srv in servers:
            srv.stop()
    import platform

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    (out / "bench.json").write_text(json.dumps({"machine": machine, "duration_s": args.duration, "rows": rows},
                                               indent=1))
    table = render(rows, machine)
    (out / "bench.md").write_text(table + "\n\n" + "\n".join(ratios(rows)) + "\n")
    chart(rows, out / "bench.png", machine)
    print()
    print(table)
    print()
    print("\n".join(ratios(rows)))
    print(f"\nwrote {out / 'bench.md'}, {out / 'bench.json'}, {out / 'bench.png'} in {time.monotonic() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
