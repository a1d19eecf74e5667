"""What must match between the tensorflow/serving container path and the embedded server, checked here
without a Docker engine: compose/Kubernetes/Dockerfile flags parse with the embedded server's flag parser,
mounts agree with models.config, config files parse, and the GPU variant differs only where it must."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess

import pytest
import yaml

from tfsb.server import config as cfgmod
from tfsb.server.flags import parse_flags
from tests.conftest import REPO
from tests.server_util import free_port, wait_for

DOCKER = REPO / "docker"
# what the image's entrypoint always passes before the user's arguments (tools/docker/Dockerfile)
IMAGE_ENTRYPOINT_FLAGS = ["--port=8500", "--rest_api_port=8501", "--model_name=model",
                          "--model_base_path=/models/model"]


def compose() -> dict:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def _default(value: str) -> str:
    """`${VAR:-default}` → default, the way compose interpolates an unset variable."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _k8s(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((DOCKER / "k8s" / name).read_text()) if d]


def _check_flags(args: list[str]) -> dict:
    opts = parse_flags(IMAGE_ENTRYPOINT_FLAGS + args)
    assert opts.unknown == (), f"flags the server does not know: {opts.unknown}"
    for a in args:  # every flag is in --name=value form, so TF's parser applies it (not silently dropped)
        assert re.fullmatch(r"--[a-z_]+=.+", a), a
    return opts.values


def _dockerfile_args(name: str) -> list[str]:
    text = (DOCKER / name).read_text().replace("\\\n", " ")
    out = []
    for kw in ("ENTRYPOINT", "CMD"):
        m = re.search(rf"^{kw} (\[.*?\])", text, re.M)
        if m:
            out += [a for a in json.loads(m.group(1)) if a.startswith("--")]
    return out


def test_compose_flags_are_accepted_by_the_embedded_server_with_the_same_meaning():
    svc = compose()["services"]["tfserving"]
    values = _check_flags(svc["command"])
    assert values["model_config_file"] == "/config/models.config"
    assert values["enable_batching"] is True and values["batching_parameters_file"] == "/config/batching.config"
    assert values["monitoring_config_file"] == "/config/monitoring.config"
    assert values["file_system_poll_wait_seconds"] == 1 and values["model_config_file_poll_wait_seconds"] == 5
    assert values["allow_version_labels_for_unavailable_models"] is True


def test_mounts_agree_with_models_config_and_every_file_flag():
    svc = compose()["services"]["tfserving"]
    mounts = {}
    for v in svc["volumes"]:
        src, dst = (v.rsplit(":", 2) if v.endswith((":ro", ":rw")) else v.rsplit(":", 1))[:2]
        mounts[dst] = src
    assert mounts["/models"] == "${MODELS_DIR:-../models}"
    assert mounts["/config"] == "${CONFIG_DIR:-../config}"  # a directory: renames of models.config show
    cfg = cfgmod.parse_text_file(REPO / "config" / "models.config", cfgmod.ModelServerConfig)
    for m in cfg.model_config_list.config:
        assert m.base_path == f"/models/{m.name}"  # i.e. ./models/<name>, where `make export` writes
    values = parse_flags(svc["command"]).values
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        src = (DOCKER / _default(mounts["/config"]) / values[flag].removeprefix("/config/")).resolve()
        assert src.is_file(), f"{flag} is {values[flag]}, but {src} does not exist"
    assert (DOCKER / mounts["/healthcheck.sh"]).resolve() == DOCKER / "healthcheck.sh"
    assert "linear" not in json.dumps(svc["healthcheck"])  # no demo model hard-coded
    assert (DOCKER / "../models").resolve() == REPO / "models"  # where `make export` publishes


def test_config_files_parse_with_the_protobuf_classes():
    cfgmod.validate(cfgmod.parse_text_file(REPO / "config" / "models.config", cfgmod.ModelServerConfig), None)
    bp = cfgmod.parse_text_file(REPO / "config" / "batching.config", cfgmod.BatchingParameters)
    assert bp.max_batch_size.value > 0
    mon = cfgmod.parse_text_file(REPO / "config" / "monitoring.config", cfgmod.MonitoringConfig)
    assert cfgmod.prometheus_path(mon) == "/monitoring/prometheus/metrics"


def test_gpu_variant_differs_only_in_image_and_device_reservation():
    services = compose()["services"]
    cpu, gpu = copy.deepcopy(services["tfserving"]), copy.deepcopy(services["tfserving-gpu"])
    assert _default(cpu["image"]) == "tensorflow/serving:2.21.0"
    assert _default(gpu["image"]) == _default(cpu["image"]) + "-gpu"
    assert cpu["image"].startswith("${TFS_IMAGE:-") and gpu["image"].startswith("${TFS_GPU_IMAGE:-")
    devices = gpu.pop("deploy")["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert gpu.pop("profiles") == ["gpu"]
    gpu.pop("image"), cpu.pop("image")
    assert gpu == cpu


def test_image_tag_matches_the_tensorflow_that_exports():
    import tensorflow as tf

    tag = _default(compose()["services"]["tfserving"]["image"]).split(":")[1]
    assert tuple(map(int, tf.__version__.split(".")[:2])) <= tuple(map(int, tag.split(".")[:2]))
    assert f"ARG TFS_TAG={tag}" in (DOCKER / "Dockerfile").read_text()


def test_dockerfile_flags_parse():
    assert _check_flags(_dockerfile_args("Dockerfile"))["model_config_file"] == "/config/models.config"
    text = (DOCKER / "Dockerfile.embedded").read_text()
    assert "COPY tfsb/" in text and "requirements/runtime.lock" in text and "ARG BASE=" in text and "FROM ${BASE}" in text
    # the entrypoint passes what the official image's does, then the user's arguments
    entry = (DOCKER / "entrypoint.sh").read_text().replace("\\\n", " ")
    args = re.findall(r"--[a-z_]+=\S+", entry)
    values = parse_flags([a.replace('"${MODEL_NAME:-model}"', "model")
                          .replace('"${MODEL_BASE_PATH:-/models}/${MODEL_NAME:-model}"', "/models/model")
                          for a in args]).values
    assert values["port"] == 8500 and values["rest_api_port"] == 8501
    assert values["model_name"] == "model" and values["model_base_path"] == "/models/model"
    assert '"$@"' in entry


def test_dockerignore_keeps_the_build_context_small():
    lines = (REPO / ".dockerignore").read_text().split()
    assert lines[lines.index("*")] == "*"  # everything excluded first, then only what the images copy
    assert "!tfsb/" in lines and "!requirements/runtime.lock" in lines and ".venv" not in " ".join(
        ln for ln in lines if ln.startswith("!"))


def test_kubernetes_manifests():
    (dep,) = _k8s("base/deployment.yaml")
    (svc,) = _k8s("base/service.yaml")
    (hpa,) = _k8s("base/hpa.yaml")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    values = _check_flags(c["args"])
    assert values["model_config_file"].startswith("/config/")
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts["/models"] == "models" and mounts["/config"] == "config"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"grpc": 8500, "http": 8501}
    assert c["readinessProbe"]["exec"]["command"] == ["bash", "/config/healthcheck.sh"]
    assert c["livenessProbe"]["tcpSocket"]["port"] in ports
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 10 and "preStop" in c["lifecycle"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {8500, 8501}
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    (kust,) = _k8s("base/kustomization.yaml")
    for entry in kust["configMapGenerator"][0]["files"]:
        key, path = entry.split("=")
        assert (DOCKER / "k8s" / "base" / path).resolve().is_file(), path
        if key != "healthcheck.sh":
            assert values[{"models.config": "model_config_file", "batching.config": "batching_parameters_file",
                           "monitoring.config": "monitoring_config_file"}[key]] == f"/config/{key}"
    (gpu,) = _k8s("overlays/gpu/kustomization.yaml")
    assert gpu["images"] == [{"name": "tensorflow/serving", "newTag": "2.21.0-gpu"}]
    assert "nvidia.com~1gpu" in gpu["patches"][0]["patch"]


def test_kubernetes_config_copies_do_not_drift():
    copies = DOCKER / "k8s" / "base" / "config"
    for name in ("models.config", "batching.config", "monitoring.config"):
        assert (copies / name).read_text() == (REPO / "config" / name).read_text(), \
            f"docker/k8s/base/config/{name} differs from tfsb.server/{name}: run `make k8s-config`"
    assert (copies / "healthcheck.sh").read_text() == (DOCKER / "healthcheck.sh").read_text()


@pytest.mark.parametrize("overlay", ["cpu", "gpu", "embedded"])
def test_kustomize_renders_every_overlay_to_valid_kubernetes(overlay):
    """What `kubectl apply -k` would send, validated against the Kubernetes schemas."""
    import kubernetes_validate

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    out = subprocess.run([kubectl, "kustomize", str(DOCKER / "k8s" / "overlays" / overlay)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert {d["kind"] for d in docs} == {"ConfigMap", "Service", "PersistentVolumeClaim", "Deployment",
                                          "HorizontalPodAutoscaler"}
    for d in docs:
        kubernetes_validate.validate(d, "1.32.0", strict=True)
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap"]
    assert cm["data"]["models.config"] == (REPO / "config" / "models.config").read_text()
    volume = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"][0]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]  # the generated, hash-suffixed name
    image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == {"cpu": "tensorflow/serving:2.21.0", "gpu": "tensorflow/serving:2.21.0-gpu",
                     "embedded": "tf-serving-bundle-embedded:local"}[overlay]


def test_compose_file_is_valid_for_docker_compose_including_the_gpu_profile():
    r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True) \
        if shutil.which("docker") else None
    if r is None or r.returncode != 0:
        pytest.skip("Docker Compose v2 is not installed (make docker-bootstrap installs it)")
    out = subprocess.run(["docker", "compose", "-f", str(DOCKER / "docker-compose.yml"), "--profile", "gpu",
                          "config", "--format", "json"], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert services["tfserving"]["image"] == "tensorflow/serving:2.21.0"
    assert services["tfserving-gpu"]["image"] == "tensorflow/serving:2.21.0-gpu"
    assert services["tfserving-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
    assert {p["host_ip"] for s in services.values() for p in s["ports"]} == {"127.0.0.1"}


def test_make_serve_auto_falls_back_to_embedded_without_engine_or_image(zoo, tmp_path):
    base, _ = zoo
    run_dir = tmp_path / "run"
    grpc_port, rest_port = free_port(), free_port()
    args = [f"MODELS={base}", f"RUN={run_dir}", f"GRPC_PORT={grpc_port}", f"REST_PORT={rest_port}",
            "TFS_IMAGE=tfsb-test/not-built-here:0"]  # an engine may answer; this image is never present
    r = subprocess.run(["make", "serve", "SERVER=auto", "DETACH=1", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "using the embedded server" in r.stdout
        assert "no Docker engine reachable" in r.stdout or \
            "image tfsb-test/not-built-here:0 is not present locally" in r.stdout, r.stdout
        assert f"backend: embedded (python -m tfsb.server), gRPC localhost:{grpc_port}" in r.stdout
        import requests

        def ready():
            try:
                return requests.get(f"http://127.0.0.1:{rest_port}/readyz", timeout=2).status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(ready, timeout=180, what="make serve to be ready")
        assert requests.post(f"http://127.0.0.1:{rest_port}/v1/models/linear:predict",
                             data=b'{"instances": [[1.0]]}').status_code == 200
    finally:
        stop = subprocess.run(["make", "stop", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert "stopped embedded server" in stop.stdout

    def refused():
        try:
            requests.get(f"http://127.0.0.1:{rest_port}/readyz", timeout=2)
            return False
        except requests.ConnectionError:
            return True

    wait_for(refused, timeout=60, what="the server to be gone after make stop")


def test_make_serve_serves_only_your_own_models(tmp_path):
    """No demo model under MODELS: `make serve` generates the config from the model directories."""
    import requests
    import tensorflow as tf

    class Double(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * 2.0}

    models = tmp_path / "models"
    m = Double()
    tf.saved_model.save(m, str(models / "double" / "1"), signatures={"serving_default": m.serve})
    run_dir = tmp_path / "run"
    grpc_port, rest_port = free_port(), free_port()
    args = [f"MODELS={models}", f"RUN={run_dir}", f"GRPC_PORT={grpc_port}", f"REST_PORT={rest_port}"]
    r = subprocess.run(["make", "serve", "SERVER=embedded", "DETACH=1", *args], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "using a config generated from" in r.stderr and "double" in r.stderr, r.stderr

        def answer():
            try:
                return requests.post(f"http://127.0.0.1:{rest_port}/v1/models/double:predict",
                                     json={"instances": [1.5]}, timeout=2).json().get("predictions")
            except requests.ConnectionError:
                return None

        assert wait_for(answer, timeout=180, what="make serve to answer") == [3.0]
    finally:
        subprocess.run(["make", "stop", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
