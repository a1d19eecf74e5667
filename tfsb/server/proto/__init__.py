"""The project's own protobuf messages (TF Serving config files that tensorflow-serving-api does not ship):
`.proto` sources here, `*_pb2.py` compiled from them by grpcio-tools (`make protos`)."""
