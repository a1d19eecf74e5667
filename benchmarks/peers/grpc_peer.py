"""A plain hand-written grpcio PredictionService, the way most tutorials write one: the TF2 signature
function, tf.make_ndarray / tf.make_tensor_proto, a thread pool. The benchmark's gRPC reference peer."""

import argparse
import os
import time
from concurrent import futures

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc  # noqa: E402


class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, models: dict):
        self.models = models

    def Predict(self, request, context):
        fn = self.models[request.model_spec.name].signatures[request.model_spec.signature_name or "serving_default"]
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        outputs = fn(**inputs)
        resp = predict_pb2.PredictResponse()
        for k, v in outputs.items():
            resp.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
        resp.model_spec.name = request.model_spec.name
        return resp


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", action="append", required=True, help="NAME=SAVEDMODEL_DIR")
    args = p.parse_args()
    models = {m.split("=")[0]: tf.saved_model.load(m.split("=")[1]) for m in args.model}
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(models), server)
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
