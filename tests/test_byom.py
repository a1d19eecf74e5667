"""Bring your own model: SavedModels with the layouts of TF Serving's own test models (tests/byom_models.py)
publish with no samples, and every example `inspect` prints is accepted by the server as printed."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
import requests

from tfsb.export.publish import read_warmup
from tests.byom_models import FOREIGN
from tests.inprocess import InProcessServer, run_main



@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """Each model built, then published with `python -m tfsb.export.byom publish` and no --sample."""
    root = tmp_path_factory.mktemp("foreign")
    results = {}
    for name, build in FOREIGN.items():
        build(root / "src" / name / "00000123")  # the layout of TF Serving's testdata: a base path
        results[name] = run_main("tfsb.export.byom", ["publish", str(root / "src" / name), "--name", name,
                                                 "--base-path", str(root / "models")])
    return root, results


def test_every_signature_of_foreign_models_publishes_without_samples(foreign):
    root, results = foreign
    for name, r in results.items():
        assert r.returncode == 0, f"{name}: {r.stderr[-2000:]}"
        assert "is a base path: using its latest version" in r.stderr and "00000123" in r.stderr
        assert "Traceback" not in r.stderr
    kinds = {name: sorted(rec.WhichOneof("log_type") for rec in read_warmup(root / "models" / name / "1"))
             for name in FOREIGN}
    assert kinds["tf1_half_plus_two"] == ["classify_log", "predict_log", "predict_log", "regress_log",
                                          "regress_log"]  # regress_x2_to_y3 over a float tensor: predict
    assert kinds["tf2_half_plus_two"] == ["predict_log"] * 3  # predict method over serialized Examples
    assert kinds["half_plus_three"] == ["predict_log", "regress_log"]  # DT_FLOAT declared, Examples fed
    assert kinds["counter"] == ["predict_log"] * 4


def _lines(text: str, kind: str) -> list[str]:
    return [ln.split(f"{kind}: ", 1)[1] for ln in text.splitlines() if ln.strip().startswith(f"{kind}: ")]


def test_every_inspect_example_is_accepted_by_the_server_as_printed(foreign):
    root, _ = foreign
    cfg = root / "models.config"
    cfg.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{n}" base_path: "{root / "models" / n}" model_platform: "tensorflow" }}\n'
        for n in FOREIGN) + "}\n")
    srv = InProcessServer([f"--model_config_file={cfg}"])
    srv.wait_ready()
    try:
        from tfsb.client import GrpcClient

        grpc_client = GrpcClient(srv.grpc_target, retries=0)
        checked = 0
        for name in FOREIGN:
            r = run_main("tfsb.export.byom", ["inspect", str(root / "models" / name), "--name", name])
            assert r.returncode == 0, r.stderr[-2000:]
            for line in r.stdout.splitlines():
                assert len(line) < 400, f"{name}: a line too long to paste ({len(line)} chars)"
            for rest in _lines(r.stdout, "REST"):
                if rest.startswith("none"):
                    continue
                m = re.fullmatch(r"curl -d '(.*)' localhost:8501(\S+)", rest)
                if m is None:
                    m = re.fullmatch(r"python3 -c '(.*)' \| curl -d @- localhost:8501(\S+)", rest)
                    out = io.StringIO()
                    with contextlib.redirect_stdout(out):
                        exec(m.group(1), {})
                    body = out.getvalue()
                else:
                    body = m.group(1)
                ans = requests.post(srv.rest_url + m.group(2), data=body, timeout=30)
                assert ans.status_code == 200, f"{name}: {rest[:200]} → {ans.status_code} {ans.text[:300]}"
                checked += 1
            for call in _lines(r.stdout, "gRPC"):
                exec(call, {"GrpcClient": lambda target: grpc_client, "np": np})
                checked += 1
            if name == "tf1_half_plus_two":  # the model's own feature names, not a placeholder
                assert '"examples": [{"x": [0.5], "x2": [0.5]}]' in r.stdout
            if name == "image":
                assert "[[[[0.5] * 3] * 64] * 64] * 1" in r.stdout
        assert checked == 27  # every signature of every model: REST (where the JSON API can) and gRPC
    finally:
        srv.stop()


def test_samples_are_tf_serving_request_bodies(tmp_path):
    from tests.byom_models import tf1_half_plus_two, tf2_half_plus_two

    tf1_half_plus_two(tmp_path / "tf1")
    tf2_half_plus_two(tmp_path / "tf2")

    def publish(src, *extra):
        return run_main("tfsb.export.byom", ["publish", str(tmp_path / src), "--name", src, "--base-path",
                                        str(tmp_path / "models"), *extra])

    example = '{"examples": [{"x": [1.5]}], "context": {"x2": [2.0]}}'
    ok = publish("tf1", "--sample", 'serving_default={"instances": [[1.0], [2.0]]}',
                 "--sample", f"classify_x_to_y={example}", "--sample", 'regress_x2_to_y3={"inputs": [[4.0]]}')
    assert ok.returncode == 0, ok.stderr[-2000:]
    records = {rec.WhichOneof("log_type"): rec for rec in read_warmup(tmp_path / "models" / "tf1" / "1")}
    assert len(records["classify_log"].classify_log.request.input.example_list.examples) == 1
    import base64

    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example()
    ex.features.feature["x"].float_list.value.append(3.0)
    blob = base64.b64encode(ex.SerializeToString()).decode()
    b64 = publish("tf2", "--sample", f'classify_x_to_y={{"instances": [{{"b64": "{blob}"}}]}}',
                  "--sample", 'regress_x_to_y={"examples": [{"x": 1.0}]}')  # Examples into a predict signature
    assert b64.returncode == 0, b64.stderr[-2000:]
    typo = publish("tf1", "--sample", 'servng_default={"instances": [[1.0]]}')
    assert typo.returncode == 1
    assert typo.stderr.strip().splitlines()[-1] == (
        "NOT published: tf1: 'servng_default' (in --sample/--skip-signature) is not a signature of this SavedModel; "
        "its signatures: classify_x_to_y, regress_x2_to_y3, regress_x_to_y, regress_x_to_y2, serving_default")
    bad = publish("tf1", "--sample", 'serving_default={"instances": [["a"]]}')
    assert bad.returncode == 1 and "sample for signature 'serving_default'" in bad.stderr
    skipped = publish("tf1", "--skip-signature", "regress_x_to_y2")
    assert skipped.returncode == 0 and "signature 'regress_x_to_y2' skipped" in skipped.stderr
    assert len(read_warmup(Path(tmp_path / "models" / "tf1" / "2"))) == 4


def test_inspect_of_something_that_is_not_a_saved_model_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "missing", tmp_path):
        r = run_main("tfsb.export.byom", ["inspect", str(path)])
        assert r.returncode == 1 and "Traceback" not in r.stderr
        assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith(f"cannot inspect {path}: ")


def test_publish_config_on_a_rendered_config_edits_its_template_too(tmp_path):
    """`--config run/models.config` (rendered by `make serve`): the model goes into the template as well, one
    entry added and every other line kept, so the next re-render still serves it."""
    from tests.byom_models import counter
    from tests.conftest import REPO

    template = tmp_path / "config" / "models.config"
    template.parent.mkdir()
    template.write_text((REPO / "config" / "models.config").read_text())
    before = template.read_text()
    models = tmp_path / "models"
    rendered = tmp_path / "run" / "models.config"
    r = run_main("tfsb.export.serve_config", ["--models", str(models), "--template", str(template), "--force", "--out",
                                         str(rendered)])
    assert r.returncode == 0, r.stderr
    counter(tmp_path / "src")
    r = run_main("tfsb.export.byom", ["publish", str(tmp_path / "src"), "--name", "mine", "--base-path", str(models),
                                 "--config", str(rendered)])
    assert r.returncode == 0, r.stderr[-2000:]
    after = template.read_text()
    assert after.startswith(before[:before.rindex("}")].rstrip())  # every line before is kept
    assert '    name: "mine"\n    base_path: "/models/mine"' in after
    assert f'base_path: "{models.resolve() / "mine"}"' in rendered.read_text()
    again = run_main("tfsb.export.serve_config", ["--models", str(models), "--template", str(template), "--force",
                                             "--out", str(rendered)])
    assert again.returncode == 0 and f'base_path: "{models.resolve()}/mine"' in rendered.read_text()
