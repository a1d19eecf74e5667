"""The README's export examples and the export CLI run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO


def _python_blocks(section: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    start = text.index(f"## {section}")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


def test_readme_export_examples_run_as_written(tmp_path):
    blocks = _python_blocks("Exporting your own model")
    assert len(blocks) == 3
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    for i, code in enumerate(blocks):
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, f"block {i}:\n{r.stderr[-3000:]}"
    assert (tmp_path / "exported_model_basic" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "exported_model_multi_sig" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "models" / "my_model" / "1" / "assets.extra" / "tf_serving_warmup_requests").exists()


def test_export_cli_publishes_next_version_with_a_signature_table(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "export", "--model", "linear", "--base-path", str(tmp_path)]
    first = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "published version 1" in first.stdout
    assert re.search(r"signature 'serving_default'\s+method: tensorflow/serving/predict", first.stdout)
    assert re.search(r"input\s+x\s+DT_FLOAT\s+\(-1, 1\)", first.stdout)
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "published version 2" in second.stdout
    bad = subprocess.run([*cmd[:3], "--model", "nope"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "unknown model 'nope'" in bad.stderr
