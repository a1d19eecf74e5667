"""The gRPC transport floor: a grpcio sync server whose Predict answers canned bytes (the serialized
PredictResponse a real server returns for the same request) without parsing the request — what grpcio
costs with no protobuf work and no model."""

import argparse
import time
from concurrent import futures

import grpc


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", required=True, help="file with the serialized PredictResponse")
    p.add_argument("--model", help="a SavedModel version directory: one call of it per request (make profile)")
    args = p.parse_args()
    reply = open(args.reply, "rb").read()
    if args.model:
        from model_call import model_call

        call = model_call(args.model)

        def answer(req, ctx):
            call()
            return reply
    else:
        def answer(req, ctx):
            return reply
    handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(answer, request_deserializer=None,
                                                       response_serializer=None)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
