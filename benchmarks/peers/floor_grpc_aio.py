"""The gRPC transport floor on `grpc.aio`: one asyncio loop whose Predict answers the same canned bytes as
floor_grpc.py (no request parsing, no model), so the report can set the project against the lower of the two
grpcio floors instead of assuming which server model is cheaper on this machine."""

import argparse
import asyncio

import grpc


async def serve(port: int, reply: bytes) -> None:
    async def predict(request, context):
        return reply

    handler = grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
        "Predict": grpc.unary_unary_rpc_method_handler(predict, request_deserializer=None,
                                                       response_serializer=None)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("ready", flush=True)
    await server.wait_for_termination()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", required=True, help="file with the serialized PredictResponse")
    args = p.parse_args()
    asyncio.run(serve(args.port, open(args.reply, "rb").read()))


if __name__ == "__main__":
    main()
