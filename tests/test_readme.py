"""The export and bring-your-own-model examples (docs/byom.md) and the export CLI run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO, pip_install_target
from tests.inprocess import run_main, run_python


def _python_blocks(section: str) -> list[str]:
    text = (REPO / "docs" / "byom.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_readme_export_examples_run_as_written(tmp_path):
    blocks = _python_blocks("Exporting your own model")
    assert len(blocks) == 3
    for i, code in enumerate(blocks):
        r = run_python(code, cwd=tmp_path)  # in-process: the blocks import only what the checkout provides
        assert r.returncode == 0, f"block {i}:\n{r.stderr[-3000:]}"
    assert (tmp_path / "exported_model_basic" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "exported_model_multi_sig" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "models" / "my_model" / "1" / "assets.extra" / "tf_serving_warmup_requests").exists()


def test_export_cli_publishes_next_version_with_a_signature_table(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "tfsb.export", "--model", "linear", "--base-path", str(tmp_path)]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "published version 1" in first.stdout
    assert re.search(r"signature 'serving_default'\s+method: tensorflow/serving/predict", first.stdout)
    assert re.search(r"input\s+x\s+DT_FLOAT\s+\(-1, 1\)", first.stdout)
    # the entry point ran once above as a real process; the same command again in-process
    second = run_main("tfsb.export", cmd[3:], cwd=REPO)
    assert second.returncode == 0 and "published version 2" in second.stdout, second.stderr[-3000:]
    bad = run_main("tfsb.export", ["--model", "nope"], cwd=REPO)
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr


def test_readme_bring_your_own_model_walkthrough_runs_outside_the_checkout(tmp_path):
    """The BYOM walkthrough's commands, as written, from a directory outside the repository, on a model built with
    Keras 3 `model.export`, with the installed console scripts."""
    import json
    import time

    import numpy as np

    from tests.server_util import free_port

    text = (REPO / "docs" / "byom.md").read_text()
    start = text.index("## Bring your own model")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S).group(1)
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert [ln.split()[0] for ln in lines] == ["tfsb-byom", "tfsb-byom", "tfsb-serve", "curl"]
    target = tmp_path / "site"
    env = pip_install_target(str(REPO), target)
    work = tmp_path / "work"
    work.mkdir()
    build = ("import keras, numpy as np\n"
             "inp = keras.Input((3,), name='features')\n"
             "m = keras.Model(inp, keras.layers.Dense(2)(inp))\n"
             "m.export('my_export', verbose=False)\n"
             "print(m.predict(np.array([[1.0, 2.0, 3.0]], np.float32), verbose=0).tolist())\n")
    made = subprocess.run([sys.executable, "-c", build], cwd=work, env=env, capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr[-2000:]
    want = json.loads(made.stdout.strip().splitlines()[-1])
    grpc_port, rest_port = free_port(), free_port()

    def sh(line: str) -> str:
        return line.replace("8500", str(grpc_port)).replace("8501", str(rest_port)).rstrip("& ")

    for line in lines[:2]:
        out = subprocess.run(["bash", "-c", sh(line)], cwd=work, env=env, capture_output=True, text=True,
                             timeout=300)
        assert out.returncode == 0, f"{line}\n{out.stdout[-1000:]}\n{out.stderr[-2000:]}"
    server = subprocess.Popen(["bash", "-c", "exec " + sh(lines[2])], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            out = subprocess.run(["bash", "-c", sh(lines[3])], cwd=work, env=env, capture_output=True, text=True,
                                 timeout=30)
            if out.returncode == 0 and "predictions" in out.stdout:
                break
            assert time.monotonic() < deadline and server.poll() is None, out.stderr[-1000:]
            time.sleep(0.5)
        np.testing.assert_allclose(json.loads(out.stdout)["predictions"], want, rtol=1e-5)
    finally:
        server.terminate()
        server.wait(30)


def test_make_help_names_the_port_variables():
    out = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, timeout=60).stdout
    assert "GRPC_PORT=" in out and "REST_PORT=" in out and "make serve" in out


def test_bench_chart_plots_ratios_against_each_peer(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import run as bench
    finally:
        sys.path.pop(0)
    rows = []
    for sid, *_ in bench.SCENARIOS:
        for server, proto, rows_s in (("embedded", "grpc", 300.0), ("embedded+batching", "grpc", 450.0),
                                      ("grpcio peer", "grpc", 150.0), ("embedded", "rest", 200.0),
                                      ("FastAPI peer", "rest", 100.0), ("in-process (session callable)", "-", 600.0)):
            rows.append({"server": server, "protocol": proto, "scenario": sid, "rows_per_s": rows_s})
    r = bench.chart_ratios(rows)
    assert r["embedded gRPC / grpcio peer"] == [2.0] * len(bench.SCENARIOS)
    assert r["embedded gRPC+batching / grpcio peer"] == [3.0] * len(bench.SCENARIOS)
    assert r["embedded REST / FastAPI peer"] == [2.0] * len(bench.SCENARIOS)
    assert r["embedded gRPC / in-process floor"] == [0.5] * len(bench.SCENARIOS)
    bench.chart(rows, tmp_path / "bench.png", "x86_64, 2 cores")
    assert (tmp_path / "bench.png").stat().st_size > 10_000
