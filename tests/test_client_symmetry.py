"""The two clients are mirror images: the same retry policy, the same metadata cache, the same status table
as the server, and REST errors keep their exact code. Checked against scripted in-process fakes of both
protocols, so each attempt and each metadata fetch can be counted."""

from __future__ import annotations

import json
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from tfsb.client import GrpcClient, RestClient, ServingClientError
from tfsb.errors import HTTP_STATUS, Code
from tfsb.wire import tensor_proto
from tfsb.wire.status import CODE_HEADER, code_for_http


def _sigdefs() -> get_model_metadata_pb2.SignatureDefMap:
    sdm = get_model_metadata_pb2.SignatureDefMap()
    sd = sdm.signature_def["serving_default"]
    sd.method_name = "tensorflow/serving/predict"
    for where, alias in ((sd.inputs, "x"), (sd.outputs, "y")):
        where[alias].CopyFrom(meta_graph_pb2.TensorInfo(name=f"{alias}:0", dtype=1))
        where[alias].tensor_shape.dim.add(size=-1)
    return sdm


class Script:
    """What the fake servers answer: `failures` (code names) first, one per call, then success."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.predicts = 0
        self.metadata = 0
        self.lock = threading.Lock()

    def next_failure(self) -> str | None:
        with self.lock:
            self.predicts += 1
            return self.failures.pop(0) if self.failures else None


@pytest.fixture
def rest_fake():
    script = Script()
    sdm_json = json.loads(json_format.MessageToJson(_sigdefs(), preserving_proto_field_name=True))

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self, status: int, doc: dict, code: str | None = None):
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if code is not None and script.header:
                self.send_header(CODE_HEADER, code)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            script.metadata += 1
            self._answer(200, {"model_spec": {"name": "m", "version": "1", "signature_name": ""},
                               "metadata": {"signature_def": sdm_json}})

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            failure = script.next_failure()
            if failure is not None:
                self._answer(HTTP_STATUS[Code[failure]], {"error": f"scripted {failure}"}, failure)
            else:
                self._answer(200, {"outputs": [[2.0]]})

    script.header = True
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    with RestClient(f"http://127.0.0.1:{httpd.server_address[1]}", retries=2, backoff=0.001) as c:
        yield c, script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def grpc_fake():
    script = Script()

    def predict(request, context):
        failure = script.next_failure()
        if failure is not None:
            context.abort(grpc.StatusCode[failure], f"scripted {failure}")
        resp = predict_pb2.PredictResponse()
        tensor_proto.from_numpy(np.array([[2.0]], np.float32), into=resp.outputs["y"])
        return resp

    def metadata(request, context):
        script.metadata += 1
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        resp.model_spec.name = "m"
        resp.model_spec.version.value = 1
        resp.metadata["signature_def"].Pack(_sigdefs())
        return resp

    server = grpc.server(futures.ThreadPoolExecutor(4))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(
            predict, predict_pb2.PredictRequest.FromString, predict_pb2.PredictResponse.SerializeToString),
        "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
            metadata, get_model_metadata_pb2.GetModelMetadataRequest.FromString,
            get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString),
    })])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with GrpcClient(f"127.0.0.1:{port}", retries=2, backoff=0.001) as c:
        yield c, script
    server.stop(0)


@pytest.fixture(params=["grpc", "rest"])
def fake(request):
    return request.getfixturevalue(f"{request.param}_fake")


def test_both_clients_retry_unavailable_the_same_number_of_times(fake):
    client, script = fake
    script.failures = ["UNAVAILABLE", "UNAVAILABLE"]
    out = client.predict("m", {"x": np.ones((1, 1), np.float32)})
    np.testing.assert_array_equal(out["y"], [[2.0]])
    assert script.predicts == 3  # two refused attempts, then the answer

    script.failures, script.predicts = ["UNAVAILABLE"] * 3, 0
    with pytest.raises(ServingClientError) as e:
        client.predict("m", {"x": np.ones((1, 1), np.float32)})
    assert e.value.code == "UNAVAILABLE" and e.value.http_status == 503
    assert script.predicts == 3  # 1 + retries, then the error


@pytest.mark.parametrize("code", ["INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "RESOURCE_EXHAUSTED",
                                  "DEADLINE_EXCEEDED", "INTERNAL", "OUT_OF_RANGE"])
def test_both_clients_report_the_exact_code_and_never_retry_it(fake, code):
    client, script = fake
    script.failures = [code]
    with pytest.raises(ServingClientError) as e:
        client.predict("m", {"x": np.ones((1, 1), np.float32)})
    assert (e.value.code, e.value.http_status, e.value.message) == (code, HTTP_STATUS[Code[code]], f"scripted {code}")
    assert script.predicts == 1


def test_rest_client_without_the_code_header_falls_back_to_the_status_table(rest_fake):
    client, script = rest_fake
    script.header = False  # a server that does not name the code (tensorflow/serving itself)
    for code, expect in (("FAILED_PRECONDITION", "INVALID_ARGUMENT"), ("NOT_FOUND", "NOT_FOUND"),
                         ("DATA_LOSS", "INTERNAL")):
        script.failures = [code]
        with pytest.raises(ServingClientError) as e:
            client.predict("m", {"x": np.ones((1, 1), np.float32)})
        assert e.value.code == expect and e.value.http_status == HTTP_STATUS[Code[code]]


def test_both_clients_cache_metadata_for_unnamed_and_plain_python_inputs(fake):
    client, script = fake
    for _ in range(5):  # a bare list: the input's name (gRPC) and the output dtypes (REST) from metadata
        np.testing.assert_array_equal(client.predict("m", [[1.0]])["y"], [[2.0]])
    assert script.metadata == 1
    client.metadata_ttl = 0.0  # `latest` may move: an expired entry is read again
    client.predict("m", [[1.0]])
    assert script.metadata == 2
    client.predict("m", [[1.0]], version=1)
    client.predict("m", [[1.0]], version=1)  # a pinned version never changes
    assert script.metadata == 3


def test_client_and_server_share_one_status_table():
    for code in Code:
        assert ServingClientError(code.name, "m").http_status == HTTP_STATUS[code]
        assert code_for_http(HTTP_STATUS[code], code.name) == code
    assert code_for_http(400) == Code.INVALID_ARGUMENT and code_for_http(429) == Code.RESOURCE_EXHAUSTED
    assert code_for_http(400, "not-a-code") == Code.INVALID_ARGUMENT and code_for_http(418) == Code.UNKNOWN


def test_both_clients_refuse_a_version_with_a_label_as_the_server_words_it(fake):
    client, script = fake
    with pytest.raises(ServingClientError) as e:
        client.predict("m", {"x": np.ones((1, 1), np.float32)}, version=1, label="stable")
    assert (e.value.code, e.value.http_status) == ("INVALID_ARGUMENT", 400)
    assert e.value.message == "Both model version (1) and model version label (stable) cannot be supplied."
    assert script.predicts == 0  # refused before anything was sent
