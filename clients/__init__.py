"""Clients for TF Serving and the embedded server: symmetric gRPC and REST libraries, A/B routing by
version label, the label rollout tool, and the load generator."""

from clients.base import ServingClientError, make_example, make_input
from clients.grpc_client import GrpcClient
from clients.rest_client import RestClient
from serving.wire.spec import Spec

Target = Spec  # what a call addresses: model, version or label, signature (the server's own Spec)

__all__ = ["GrpcClient", "RestClient", "ServingClientError", "Spec", "Target", "make_example", "make_input"]
