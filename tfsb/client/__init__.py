"""Clients for TF Serving and the embedded server: symmetric gRPC and REST libraries, A/B routing by
version label, the label rollout tool, and the load generator."""

from tfsb.client.base import ServingClientError, make_example, make_input
from tfsb.client.grpc_client import GrpcClient
from tfsb.client.rest_client import RestClient
from tfsb.wire.spec import Spec

Target = Spec  # what a call addresses: model, version or label, signature (the server's own Spec)

__all__ = ["GrpcClient", "RestClient", "ServingClientError", "Spec", "Target", "make_example", "make_input"]
