"""`make profile`: where the project's server spends its CPU under native load, per transport at batch 1.

The server runs pinned to CPU 0 under h2load (gRPC) or wrk (REST) on CPU 1, as in `make bench`. Printed for
each transport: server CPU µs per request with the canned floors' for reference (from the same run), CPU per
thread group (from /proc, by thread name), and a py-spy sampling profile of the Python threads while they hold
the GIL (`--gil`: the interpreter's own work), as self and inclusive shares of the samples, our frames marked.
The raw profiles are kept under results/ (`py-spy`'s collapsed-stack format, for a flame graph tool).
Last, each transport's canned floor with and without the project's one model call per request, beside the
project: what the model call alone costs inside that transport.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import native  # noqa: E402


def _thread_cpu(pid: int) -> dict[str, int]:
    """Clock ticks (utime + stime) per thread name of a process."""
    out: Counter = Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[name.rstrip("0123456789-_")] += int(fields[11]) + int(fields[12])
    return out


def _frames(raw: Path) -> tuple[int, Counter, Counter]:
    total, own, incl = 0, Counter(), Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")[1:]  # the first entry is the thread
        total += int(n)
        for f in set(frames):
            incl[f] += int(n)
        if frames:
            own[frames[-1]] += int(n)
    return total, own, incl


def profile(transport: str, base: Path, tmp: Path, seconds: float, out: Path) -> str:
    proc = native.start_server("project", transport, base, tmp)
    if transport == "REST":
        proc.port = proc.rest_port
    payload = native.rest_body(1) if transport == "REST" else native.grpc_request(1)
    reply = native.rest_reply(proc.port, payload) if transport == "REST" else native.grpc_reply(proc.port, payload)
    try:
        native.measure(proc, transport, payload, len(reply), 2, 8, tmp)  # warm up
        before = _thread_cpu(proc.p.pid)
        raw = out / f"profile-{transport}.txt"
        spy = subprocess.Popen([shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"), "record",
                                "--pid", str(proc.p.pid), "--duration", str(int(seconds)), "--rate", "500",
                                "--format", "raw", "--output", str(raw), "--gil"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = native.measure(proc, transport, payload, len(reply), seconds, 8, tmp)
        spy.wait(60)
        after = _thread_cpu(proc.p.pid)
    finally:
        proc.stop()
    per_req = 1e6 / native.CLK_TCK / max(1, r["requests"])
    lines = [f"## {transport} batch 1: {r['cpu_us']:.0f} µs server CPU per request, {r['rps']:.0f} req/s, "
             f"{r['failed']} failed", "", "CPU per thread group (µs per request):", ""]
    for name, ticks in sorted(((n, after[n] - before.get(n, 0)) for n in after), key=lambda x: -x[1])[:8]:
        lines.append(f"- `{name}`: {ticks * per_req:.1f}")
    if raw.exists():
        total, own, incl = _frames(raw)
        lines += ["", f"py-spy, {total} samples while a thread held the GIL; self / inclusive share:", ""]
        for f, n in own.most_common(15):
            mark = " ← project" if "tfsb/" in f else ""
            lines.append(f"- {100 * n / total:4.1f}% / {100 * incl[f] / total:4.1f}%  `{f[:110]}`{mark}")
        ours = sum(n for f, n in own.items() if "tfsb/" in f)
        lines += ["", f"Self samples in the project's own frames: {100 * ours / max(1, total):.1f}%; the rest is "
                      "grpcio / uvicorn / asyncio / threading / TensorFlow."]
    return "\n".join(lines) + "\n"


FLOOR_KINDS = ("floor", "floor + model call", "project")


def model_call_floors(base: Path, tmp: Path, seconds: float, rounds: int = 2) -> str:
    """Server CPU per request of each transport's canned floor, the same floor making the project's one model
    call per request (`--model`), and the project's server, interleaved: what the model call alone costs
    inside each transport, which a floor target has to leave room for."""
    cpu: dict[tuple[str, str], list[float]] = {}
    for transport in ("REST", "gRPC"):
        payload = native.rest_body(1) if transport == "REST" else native.grpc_request(1)
        proc = native.start_server("project", transport, base, tmp)
        port = proc.rest_port if transport == "REST" else proc.port
        reply = native.rest_reply(port, payload) if transport == "REST" else native.grpc_reply(port, payload)
        proc.stop()
        (tmp / "reply.bin").write_bytes(reply)
        script = REPO / "benchmarks" / "peers" / ("floor_asgi.py" if transport == "REST" else "floor_grpc.py")
        for _ in range(rounds):
            for kind in FLOOR_KINDS:
                if kind == "project":
                    proc = native.start_server("project", transport, base, tmp)
                    if transport == "REST":
                        proc.port = proc.rest_port
                else:
                    port = native.free_port()
                    model = [f"--model={base / 'mlp' / '1'}"] if kind != "floor" else []
                    proc = native.Proc(native.pinned(0, [native.PY, str(script), f"--port={port}",
                                                         f"--reply={tmp / 'reply.bin'}", *model]),
                                       port, tmp / "floor.log")
                try:
                    r = native.measure(proc, transport, payload, len(reply), seconds, 8, tmp)
                finally:
                    proc.stop()
                if r["failed"]:
                    raise RuntimeError(f"{kind} {transport}: {r['failed']} failed requests")
                cpu.setdefault((transport, kind), []).append(r["cpu_us"])
    lines = ["## What one model call costs inside each transport (batch 1, µs of server CPU per request, "
             f"{rounds} interleaved rounds)", "",
             "| transport | " + " | ".join(FLOOR_KINDS) + " | (floor + model call) ÷ floor |",
             "|---|---|---|---|---|"]
    for t in ("REST", "gRPC"):
        runs = {k: cpu[(t, k)] for k in FLOOR_KINDS}
        med = {k: sorted(v)[len(v) // 2] for k, v in runs.items()}
        cells = " | ".join(" / ".join(f"{x:.0f}" for x in runs[k]) for k in FLOOR_KINDS)
        lines.append(f"| {t} | {cells} | {med['floor + model call'] / med['floor']:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--out", default=str(REPO / "results"))
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = out / "bench-models"
    from benchmarks.run import export_models

    export_models(base)
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    try:
        report = "".join(profile(t, base, tmp, args.seconds, out) + "\n" for t in ("gRPC", "REST"))
        report += model_call_floors(base, tmp, min(args.seconds, 3))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    (out / "profile.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
