"""What TF Serving's own integration tests ask of a model server beyond plain Predict — TFLite
(`--prefer_tflite_model`), the profiler on the gRPC port, parse errors on stderr, TF Text ops — plus gRPC TLS
(`--ssl_config_file`, mutual TLS) and `--platform_config_file`.

Two servers: `lite` (TFLite models in every signature layout, a TF Text model, a SavedModel, the profiler on)
and `secure` (mutual TLS, load settings only from a platform config file, profiler off)."""

from __future__ import annotations

import dataclasses
import datetime
import glob
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import text_format

from tfsb.client import GrpcClient, RestClient
from tfsb.client.base import ServingClientError, TlsFiles
from tfsb.server import config as cfgmod
from tfsb.errors import InvalidArgumentError, NotFoundError
from tfsb.server.flags import parse_flags
from tests.conftest import REPO
from tests.inprocess import InProcessServer, run_main
from tests.server_util import ServerProcess, free_port, listening_ports, serving, wait_for
from tests.tflite_models import write_half_plus_two


LAYOUTS = ("table", "metadata", "bare")


# ---------------------------------------------------------------------------------------------- fixtures

def _tf_text_model(base: Path) -> Path:
    """A SavedModel whose graph uses TF Text ops (CaseFoldUTF8, whitespace tokenization)."""
    import tensorflow as tf
    import tensorflow_text as tft

    class Tokens(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            tokens = tft.WhitespaceTokenizer().tokenize(tft.case_fold_utf8(text))
            return {"num_tokens": tokens.row_lengths(),
                    "first": tokens[:, :1].to_tensor(default_value="")[:, 0]}

    m = Tokens()
    tf.saved_model.save(m, str(base / "1"), signatures={"serving_default": m.serve})
    return base


def _config(models: dict[str, Path], all_versions: tuple[str, ...] = ()) -> str:
    body = "".join(f'  config {{ name: "{n}" base_path: "{p}" model_platform: "tensorflow"'
                   f'{" model_version_policy { all {} }" if n in all_versions else ""} }}\n'
                   for n, p in models.items())
    return f"model_config_list {{\n{body}}}\n"


@pytest.fixture(scope="module")
def lite(zoo, tmp_path_factory):
    base, trained = zoo
    root = tmp_path_factory.mktemp("lite")
    models = {f"hp2_{k}": write_half_plus_two(root / f"hp2_{k}", k) for k in LAYOUTS}
    shutil.copytree(base / "mlp_lite" / "1", root / "mlp_lite" / "1")
    models["mlp_lite"] = root / "mlp_lite"
    models["mlp"] = base / "mlp"
    models["tft"] = _tf_text_model(root / "tft")
    cfg = root / "models.config"
    cfg.write_text(_config(models, all_versions=("mlp",)))
    with serving([f"--model_config_file={cfg}", "--prefer_tflite_model=true", "--num_tflite_pools=2",
                  "--num_tflite_interpreters_per_pool=2", "--file_system_poll_wait_seconds=1"]) as srv:
        srv.root, srv.trained = root, trained
        yield srv


# ---------------------------------------------------------------------------------------------- parse errors

def test_bad_model_config_exits_with_protobufs_parse_error_on_stderr(tmp_path):
    """TF Serving's testBadModelConfig: exit non-zero, text-format parse error (line:column) on stderr."""
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list {\n  config { name: \"m\" nmae: \"x\" }\n}\n")
    r = subprocess.run([sys.executable, "-m", "tfsb.server", f"--port={free_port()}", f"--model_config_file={bad}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 255
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: 2:" in r.stderr
    assert 'has no field named "nmae"' in r.stderr
    assert f"Invalid protobuf file: '{bad}'" in r.stdout


def _parse_via(flag: str, path: Path):
    """The server's own entry point for each text-format file flag."""
    from tfsb.server import platform
    from tfsb.server.tls import server_credentials

    if flag == "ssl_config_file":
        return server_credentials(parse_flags([f"--ssl_config_file={path}"]))
    if flag == "monitoring_config_file":
        return cfgmod.parse_text_file(path, cfgmod.MonitoringConfig)
    extra = ["--enable_batching"] if flag == "batching_parameters_file" else []
    return platform.load_settings(parse_flags([f"--{flag}={path}", *extra]))


@pytest.mark.parametrize("flag,type_name", [
    ("batching_parameters_file", "tensorflow.serving.BatchingParameters"),
    ("monitoring_config_file", "tensorflow.serving.MonitoringConfig"),
    ("platform_config_file", "tensorflow.serving.PlatformConfigMap"),
    ("ssl_config_file", "tensorflow.serving.SSLConfig"),
    ("tensorflow_session_config_file", "tensorflow.ConfigProto"),
])
def test_every_text_format_file_reports_its_parse_error(flag, type_name, tmp_path, caplog):
    bad = tmp_path / "bad.txt"
    bad.write_text("\n\n   unknown_field_xyz: 3\n")
    with pytest.raises(InvalidArgumentError, match=f"Invalid protobuf file: '{bad}'"):
        _parse_via(flag, bad)
    msgs = [r.getMessage() for r in caplog.records if r.name == "tfsb.server.config"]
    assert any(m.startswith(f"Error parsing text-format {type_name}: 3:4: ") and "unknown_field_xyz" in m
               for m in msgs), msgs


# ---------------------------------------------------------------------------------------------- TFLite

def _grpc_predict(target: str, model: str, x: np.ndarray, **kw) -> np.ndarray:
    with GrpcClient(target, retries=0) as c:
        return c.predict(model, {"x": x}, **kw)["y"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_tflite_half_plus_two_in_every_signature_layout(lite, layout):
    """TF Serving's testPredictOnTfLite / testPredictWithSignatureDefOnTfLite: input `x` of shape [1], no
    output filter, y = 3.0 at version 123 — over gRPC and REST."""
    name = f"hp2_{layout}"
    with GrpcClient(lite.grpc_target, retries=0) as c:
        out = c.predict(name, {"x": np.array([2.0], np.float32)})
        assert set(out) == {"y"} and out["y"].tolist() == [3.0]
        assert c.status(name)[0]["version"] == 123
        sig = c.metadata(name)["signature_def"]["serving_default"]
    assert set(sig["inputs"]) == {"x"} and set(sig["outputs"]) == {"y"}
    r = requests.post(f"{lite.rest_url}/v1/models/{name}:predict", json={"instances": [[2.0], [4.0], [0.0]]})
    assert r.status_code == 200 and r.json() == {"predictions": [[3.0], [4.0], [2.0]]}


def test_tflite_legacy_metadata_tensor_names_are_fixed_up(lite):
    """The metadata names `tflite_input:0`; the interpreter's tensor is `tflite_input`: metadata shows the fixed
    name, as TF Serving's FixTfLiteTensorName does."""
    md = requests.get(f"{lite.rest_url}/v1/models/hp2_metadata/metadata").json()
    inputs = md["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["x"]["name"] == "tflite_input"
    bare = requests.get(f"{lite.rest_url}/v1/models/hp2_bare/metadata").json()
    sd = bare["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert sd["method_name"] == "tensorflow/serving/predict" and sd["inputs"]["x"]["name"] == "x"


def test_zoo_tflite_model_matches_the_savedmodel_over_both_transports(lite):
    """mlp_lite is mlp version 1 converted: it answers what the SavedModel answers, for any batch size in any
    order (inputs are resized per request)."""
    rng = np.random.default_rng(7)
    rest = RestClient(lite.rest_url)
    with GrpcClient(lite.grpc_target, retries=0) as g:
        for n in (1, 5, 2, 64, 1):
            x = rng.random((n, 10), dtype=np.float32)
            want = g.predict("mlp", {"x": x}, version=1)["y"]
            np.testing.assert_allclose(g.predict("mlp_lite", {"x": x})["y"], want, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(rest.predict("mlp_lite", {"x": x})["y"], want, rtol=1e-4, atol=1e-5)
        assert set(g.metadata("mlp_lite")["signature_def"]) == {"serving_default"}


def test_tflite_signature_table_with_two_subgraphs(lite):
    """Each signature of the table runs its own subgraph: `times_two` (y = 2x) next to `serving_default`."""
    rest = RestClient(lite.rest_url)
    with GrpcClient(lite.grpc_target, retries=0) as g:
        assert set(g.metadata("hp2_table")["signature_def"]) == {"serving_default", "times_two"}
        x = np.array([[1.0], [3.0]], np.float32)
        assert g.predict("hp2_table", {"x": x}, signature="times_two")["y"].tolist() == [[2.0], [6.0]]
        assert rest.predict("hp2_table", {"x": x}, signature="times_two")["y"].tolist() == [[2.0], [6.0]]
        assert g.predict("hp2_table", {"x": x})["y"].tolist() == [[2.5], [3.5]]


def test_tflite_interpreter_pool_under_concurrent_requests(lite):
    """Interpreters are not thread-safe: 8 threads with different batch sizes each get their own answer."""
    errors: list[str] = []

    def worker(i: int):
        with GrpcClient(lite.grpc_target, retries=0) as c:
            for j in range(15):
                n = 1 + (i + j) % 6
                x = np.full((n, 1), float(i), np.float32)
                y = c.predict("hp2_table", {"x": x})["y"]
                if y.shape != (n, 1) or not np.allclose(y, 0.5 * i + 2):
                    errors.append(f"thread {i} request {j}: {y.tolist()}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_tflite_errors_in_tf_servings_words_on_both_transports(lite):
    with pytest.raises(ServingClientError) as e:
        _grpc_predict(lite.grpc_target, "hp2_bare", np.array([[1]], np.int32))
    assert e.value.code == "INVALID_ARGUMENT" and "Expects arg[0] to be float but int32 is provided" in e.value.message
    r = requests.post(f"{lite.rest_url}/v1/models/hp2_bare:predict", json={"inputs": {"nope": [[1.0]]}})
    assert r.status_code == 400 and r.json()["error"] == "Missing named input: x in 'inputs' object."
    r = requests.post(f"{lite.rest_url}/v1/models/mlp_lite:predict", json={"instances": [[1.0, 2.0]]})
    assert r.status_code in (400, 500) and r.json()["error"]
    # the server survived all of it
    assert _grpc_predict(lite.grpc_target, "hp2_bare", np.array([[2.0]], np.float32)).tolist() == [[3.0]]


def test_tflite_only_version_rolls_over(lite):
    """A version directory holding only model.tflite is a complete version: a new one is picked up by the
    file-system poll and the old one unloaded (latest 1)."""
    from tfsb.export.publish import publish

    mlp2 = lite.trained["mlp@2"]
    publish(dataclasses.replace(mlp2, name="mlp_lite", tflite=True), lite.root, version=2)
    with GrpcClient(lite.grpc_target, retries=0) as g:
        wait_for(lambda: [s["version"] for s in g.status("mlp_lite") if s["state"] == "AVAILABLE"] == [2],
                 timeout=60, what="mlp_lite version 2 alone AVAILABLE")
        x = np.random.default_rng(1).random((3, 10), dtype=np.float32)
        np.testing.assert_allclose(g.predict("mlp_lite", {"x": x})["y"], g.predict("mlp", {"x": x}, version=2)["y"],
                                   rtol=1e-4, atol=1e-5)


def test_prefer_tflite_model_decides_which_file_loads(tmp_path, zoo):
    """Without --prefer_tflite_model a model.tflite-only version is not a SavedModel (TF Serving's error);
    with it, model.tflite wins even next to a saved_model.pb."""
    from tfsb.server.platform import Loader, LoadSettings
    from tfsb.server.tflite import TfLiteServable

    base, _ = zoo
    both = tmp_path / "both" / "1"
    shutil.copytree(base / "mlp" / "1", both)
    shutil.copy(base / "mlp_lite" / "1" / "model.tflite", both / "model.tflite")
    only = base / "mlp_lite" / "1"
    with pytest.raises(NotFoundError, match="does not appear to contain a SavedModel bundle"):
        Loader._open(LoadSettings(session_config=None), str(only))
    s = Loader._open(LoadSettings(session_config=None, prefer_tflite=True), str(both))
    assert isinstance(s, TfLiteServable)
    s.close()


# ---------------------------------------------------------------------------------------------- profiler

def test_profiler_trace_with_tensorflows_client_on_the_grpc_port(lite, tmp_path):
    """TF Serving's test_profiler_service_with_valid_trace_request: TensorFlow's own profiler client traces the
    model server at its gRPC address while predictions run; the trace lands in the log directory; no other
    port is opened for it."""
    from tensorflow.python.profiler import profiler_client

    stop = threading.Event()

    def load():
        rest = RestClient(lite.rest_url)
        while not stop.is_set():
            rest.predict("mlp", {"x": np.ones((2, 10), np.float32)})
            stop.wait(0.05)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    logdir = tmp_path / "logs"
    logdir.mkdir()
    try:
        profiler_client.trace(lite.grpc_target, str(logdir), 1000, "", 5)
    finally:
        stop.set()
        t.join(10)
    traces = glob.glob(str(logdir / "plugins" / "profile" / "*" / "*.xplane.pb"))
    assert traces and all(os.path.getsize(p) > 100 for p in traces), traces
    assert listening_ports(lite.proc.pid) == {lite.grpc_port, lite.rest_port}


# ---------------------------------------------------------------------------------------------- TF Text

def test_tf_text_model_loads_and_answers(lite):
    """TF Serving's test_tf_text: a SavedModel using TF Text ops loads (ops registered before loading)."""
    r = requests.post(f"{lite.rest_url}/v1/models/tft:predict",
                      json={"instances": ["Hello World  Foo", "ÄB c"]})
    assert r.status_code == 200, r.text
    assert r.json()["predictions"] == [{"first": "hello", "num_tokens": 3}, {"first": "äb", "num_tokens": 2}]


def test_tf_text_model_without_the_package_names_it(lite, tmp_path):
    """tensorflow-text not importable: the load fails with an error naming the op and the package to install
    (not only TensorFlow's 'Op type not registered'), and the server exits like TF Serving on a failed load."""
    stub = tmp_path / "stub" / "tensorflow_text"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('tensorflow_text hidden by the test')\n")
    cfg = tmp_path / "tft.config"
    cfg.write_text(_config({"tft": lite.root / "tft"}))
    srv = ServerProcess([f"--model_config_file={cfg}", "--max_num_load_retries=0"], rest=False,
                        env={"PYTHONPATH": f"{stub.parent}:{REPO}"})
    try:
        assert srv.proc.wait(120) == 255
    finally:
        srv.stop()
    log = srv.log_text()
    assert "Op type not registered" in log and "pip install tensorflow-text" in log, log[-3000:]


# ---------------------------------------------------------------------------------------------- TLS

def _certificates(root: Path, server_valid: tuple[float, float] = (-1 / 24, 1)) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 (valid `server_valid` days from now) and a client
    certificate it signs, plus a client certificate from another CA; PEM files under `root`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, issuer, pub, signer, *, ca: bool, usage=None, san=None, valid=(-1 / 24, 1)):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer)).public_key(pub)
             .serial_number(x509.random_serial_number()).not_valid_before(now + datetime.timedelta(days=valid[0]))
             .not_valid_after(now + datetime.timedelta(days=valid[1]))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if usage:
            b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        return b.sign(signer, hashes.SHA256())

    out = {}

    def write(tag, key, cert):
        out[f"{tag}.key"] = root / f"{tag}.key"
        out[f"{tag}.key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        out[f"{tag}.crt"] = root / f"{tag}.crt"
        out[f"{tag}.crt"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    for ca_tag in ("ca", "other_ca"):
        k = ec.generate_private_key(ec.SECP256R1())
        write(ca_tag, k, build(ca_tag, ca_tag, k.public_key(), k, ca=True))
    ca_key = serialization.load_pem_private_key(out["ca.key"].read_bytes(), None)
    other_key = serialization.load_pem_private_key(out["other_ca.key"].read_bytes(), None)
    k = ec.generate_private_key(ec.SECP256R1())
    write("server", k, build("localhost", "ca", k.public_key(), ca_key, ca=False, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                             san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
                             valid=server_valid))
    k = ec.generate_private_key(ec.SECP256R1())
    write("client", k, build("client", "ca", k.public_key(), ca_key, ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    k = ec.generate_private_key(ec.SECP256R1())
    write("stranger", k, build("stranger", "other_ca", k.public_key(), other_key, ca=False,
                               usage=ExtendedKeyUsageOID.CLIENT_AUTH))
    return out


PLATFORM_CONFIG = """
platform_configs {
  key: "tensorflow"
  value {
    source_adapter_config {
      [type.googleapis.com/tensorflow.serving.SavedModelBundleSourceAdapterConfig] {
        legacy_config {
          session_config { intra_op_parallelism_threads: 1 inter_op_parallelism_threads: 1 }
          batching_parameters { max_batch_size { value: 16 } batch_timeout_micros { value: 2000 } }
          prefer_tflite_model: true
          enable_model_warmup: true
        }
      }
    }
  }
}
"""


@pytest.fixture(scope="module")
def secure(zoo, tmp_path_factory):
    """Mutual TLS on gRPC; every load setting from --platform_config_file (TFLite preferred, batching on);
    no --prefer_tflite_model flag, so mlp_lite loads only because the platform file says so."""
    base, _ = zoo
    root = tmp_path_factory.mktemp("secure")
    certs = _certificates(root)
    ssl = root / "ssl.config"
    ssl.write_text(text_format.MessageToString(cfgmod.SSLConfig(
        server_key=certs["server.key"].read_text(), server_cert=certs["server.crt"].read_text(),
        custom_ca=certs["ca.crt"].read_text(), client_verify=True)))
    platform = root / "platform.config"
    platform.write_text(PLATFORM_CONFIG)
    cfg = root / "models.config"
    cfg.write_text(_config({"mlp_lite": base / "mlp_lite", "linear": base / "linear"}))
    good = TlsFiles(str(certs["ca.crt"]), str(certs["client.crt"]), str(certs["client.key"]), "localhost")
    srv = InProcessServer([f"--model_config_file={cfg}", f"--ssl_config_file={ssl}",
                           f"--platform_config_file={platform}", "--enable_profiler=false"],
                        credentials=good.credentials())
    try:
        srv.wait_ready()
        srv.certs, srv.good = certs, good
        yield srv
    finally:
        srv.stop()


def test_mutual_tls_accepts_only_clients_with_a_certificate_from_the_ca(secure):
    certs = secure.certs
    x = np.ones((2, 10), np.float32)
    with GrpcClient(secure.grpc_target, retries=0, tls=secure.good) as c:
        assert c.predict("mlp_lite", {"x": x})["y"].shape == (2, 1)
        assert c.status("linear")[0]["state"] == "AVAILABLE"
    refused = {
        "plaintext": None,
        "TLS without a client certificate": TlsFiles(str(certs["ca.crt"]), server_name="localhost"),
        "certificate from another CA": TlsFiles(str(certs["ca.crt"]), str(certs["stranger.crt"]),
                                                str(certs["stranger.key"]), "localhost"),
    }
    for what, tls in refused.items():
        with GrpcClient(secure.grpc_target, retries=0, timeout=5, tls=tls) as c:
            with pytest.raises(ServingClientError) as e:
                c.predict("mlp_lite", {"x": x})
            assert e.value.code == "UNAVAILABLE", what
    # a client that does not trust the server's CA refuses the server
    with GrpcClient(secure.grpc_target, retries=0, timeout=5,
                    tls=TlsFiles(str(certs["other_ca.crt"]), str(certs["client.crt"]), str(certs["client.key"]),
                                 "localhost")) as c:
        with pytest.raises(ServingClientError):
            c.status("linear")
    # REST stays plain HTTP, as in TF Serving
    r = requests.post(f"{secure.rest_url}/v1/models/linear:predict", json={"instances": [[1.0]]})
    assert r.status_code == 200


def test_cli_speaks_tls(secure):
    certs = secure.certs
    base = ["--grpc-target", secure.grpc_target, "--json",
            "--tls-ca", str(certs["ca.crt"]), "--tls-server-name", "localhost"]
    cmd = ["predict", "linear", "--input", '{"x": [[1.0], [2.0]]}']
    ok = run_main("tfsb.client", base + ["--tls-cert", str(certs["client.crt"]), "--tls-key", str(certs["client.key"])]
                  + cmd, cwd=REPO)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert '"y"' in ok.stdout
    no_cert = run_main("tfsb.client", base + cmd, cwd=REPO)
    assert no_cert.returncode != 0 and "UNAVAILABLE" in no_cert.stdout + no_cert.stderr


def test_platform_config_file_settings_apply(secure):
    """Batching from the platform file is on (its histograms appear); the profiler is off (UNIMPLEMENTED)."""
    from tfsb.server.profiler import _messages

    with GrpcClient(secure.grpc_target, retries=0, tls=secure.good) as c:
        for _ in range(3):
            c.predict("linear", {"x": np.array([[1.0]], np.float32)})
        profile = c.channel.unary_unary("/tensorflow.ProfilerService/Profile",
                                        request_serializer=lambda m: m.SerializeToString(),
                                        response_deserializer=lambda b: b)
        with pytest.raises(grpc.RpcError) as e:
            profile(_messages()["ProfileRequest"](duration_ms=10), timeout=5)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    log = secure.log_text()
    assert "batching on for platform tensorflow" in log and "max_batch_size=16" in log


def test_ssl_config_mistakes_are_start_up_errors(tmp_path):
    from tfsb.server.tls import server_credentials

    def creds(**fields):
        p = tmp_path / "ssl.config"
        p.write_text(text_format.MessageToString(cfgmod.SSLConfig(**fields)))
        return server_credentials(parse_flags([f"--ssl_config_file={p}"]))

    certs = _certificates(tmp_path)
    key, cert = certs["server.key"].read_text(), certs["server.crt"].read_text()
    assert creds(server_key=key, server_cert=cert) is not None  # server-only TLS
    with pytest.raises(InvalidArgumentError, match="client_verify needs custom_ca"):
        creds(server_key=key, server_cert=cert, client_verify=True)
    with pytest.raises(InvalidArgumentError, match="not PEM text"):
        creds(server_key=str(certs["server.key"]), server_cert=cert)
    with pytest.raises(InvalidArgumentError, match="needs server_key and server_cert"):
        creds(server_cert=cert)
    other_key = certs["client.key"].read_text()
    with pytest.raises(InvalidArgumentError, match="server_key does not match server_cert"):
        creds(server_key=other_key, server_cert=cert)
    garbled = cert.replace(cert.splitlines()[3], "A" * 40)
    with pytest.raises(InvalidArgumentError, match="server_cert is not a parsable PEM certificate"):
        creds(server_key=key, server_cert=garbled)
    with pytest.raises(InvalidArgumentError, match="server_key is not a parsable PEM private key"):
        creds(server_key=key.replace(key.splitlines()[2], "B" * 30), server_cert=cert)
    with pytest.raises(InvalidArgumentError, match="custom_ca is not a parsable PEM certificate"):
        creds(server_key=key, server_cert=cert, custom_ca=garbled)


@pytest.mark.parametrize("valid,words", [((-30, -1), "EXPIRED on"), ((2, 30), "NOT VALID YET")])
def test_a_certificate_outside_its_validity_is_an_error_in_the_log(tmp_path, caplog, valid, words):
    """TF Serving starts with it, and so does this server, but it says so loudly: no client will connect."""
    from tfsb.server.tls import server_credentials

    certs = _certificates(tmp_path, server_valid=valid)
    p = tmp_path / "ssl.config"
    p.write_text(text_format.MessageToString(cfgmod.SSLConfig(server_key=certs["server.key"].read_text(),
                                                              server_cert=certs["server.crt"].read_text())))
    with caplog.at_level("INFO", logger="tfsb.server"):
        assert server_credentials(parse_flags([f"--ssl_config_file={p}"])) is not None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(words in m and "server_cert" in m and "CN=localhost" in m for m in errors), errors


def test_a_tls_mistake_is_named_before_any_model_loads(tmp_path, zoo):
    """Not `Failed to BuildAndStart gRPC server` after minutes of loading: the field and the problem, first."""
    import subprocess
    import sys

    from tests.server_util import REPO, free_port

    base, _ = zoo
    certs = _certificates(tmp_path)
    p = tmp_path / "ssl.config"
    p.write_text(text_format.MessageToString(cfgmod.SSLConfig(server_key=certs["client.key"].read_text(),
                                                              server_cert=certs["server.crt"].read_text())))
    r = subprocess.run([sys.executable, "-m", "tfsb.server", f"--port={free_port()}", "--model_name=mlp",
                        f"--model_base_path={base / 'mlp'}", f"--ssl_config_file={p}"],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 255
    assert "server_key does not match server_cert" in r.stdout, r.stdout + r.stderr[-2000:]
    assert "AVAILABLE" not in r.stderr  # refused before loading


# ---------------------------------------------------------------------------------------------- platform config

def test_platform_config_errors_follow_tf_serving(tmp_path):
    from tfsb.server.platform import settings_from_platform_file

    def settings(text):
        p = tmp_path / "p.config"
        p.write_text(text)
        return settings_from_platform_file(str(p))

    not_an_adapter = ('platform_configs { key: "tensorflow" value { source_adapter_config {\n'
                      '  [type.googleapis.com/tensorflow.serving.SessionBundleConfig] { prefer_tflite_model: true }\n'
                      '} } }\n')
    with pytest.raises(InvalidArgumentError, match="Couldn't find factory for config proto message type "
                                                   "tensorflow.serving.SessionBundleConfig"):
        settings(not_an_adapter)
    with pytest.raises(InvalidArgumentError, match="Invalid protobuf file"):
        settings(PLATFORM_CONFIG.replace("SavedModelBundleSourceAdapterConfig", "NoSuchAdapter"))
    other = settings(PLATFORM_CONFIG.replace('key: "tensorflow"', 'key: "my_platform"'))
    assert set(other) == {"my_platform"}
    s = other["my_platform"]
    assert s.prefer_tflite and s.warmup and s.batching.max_batch_size == 16 and s.tags == ("serve",)
    assert s.session_config.inter_op_parallelism_threads == 1
    # the platforms a model may name are the map's keys
    cfg = text_format.Parse(_config({"m": tmp_path}), cfgmod.ModelServerConfig())
    with pytest.raises(InvalidArgumentError, match="Model m requests unsupported platform tensorflow"):
        cfgmod.validate(cfg, None, frozenset(other))
    cfg.model_config_list.config[0].model_platform = "my_platform"
    cfgmod.validate(cfg, None, frozenset(other))


def test_the_runtime_label_names_what_ran_the_model(zoo, tmp_path):
    """TF Serving's runtime_latency metric says which runtime served a request: a TFLite version is not "TF1"."""
    from tests.inprocess import InProcessServer

    base, _ = zoo
    cfg = tmp_path / "models.config"
    cfg.write_text(_config({"mlp_lite": base / "mlp_lite", "linear": base / "linear"}))
    srv = InProcessServer([f"--model_config_file={cfg}", "--prefer_tflite_model=true"], rest=False)
    srv.wait_ready()
    try:
        with GrpcClient(srv.grpc_target, retries=0) as g:
            g.predict("mlp_lite", {"x": np.ones((1, 10), np.float32)})
            g.predict("linear", {"x": np.ones((1, 1), np.float32)})
        runtimes = {(s.labels["model_name"], s.labels["runtime"]) for fam in srv.server.core.metrics.collect()
                    if fam.name == ":tensorflow:serving:runtime_latency" for s in fam.samples
                    if s.name.endswith("_count") and s.value > 0}
        assert ("mlp_lite", "TFLite") in runtimes and ("linear", "TF1") in runtimes
        assert ("mlp_lite", "TF1") not in runtimes
    finally:
        srv.stop()
