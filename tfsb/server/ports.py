"""The port-in-use check that runs before anything slow (TensorFlow's import, model loads), in the supervisor
of `--num_server_processes` and in each server process. Free of TensorFlow, so a supervisor stays light."""

from __future__ import annotations

import logging
import socket

from tfsb.errors import InvalidArgumentError
from tfsb.server.flags import ServerOptions

log = logging.getLogger("tfsb.server")


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_free(host: str, port: int, *, share: bool = False) -> OSError | None:
    """None when a listener could bind `host:port`. `share`: only for a worker joining its own siblings
    (SO_REUSEPORT); anyone else must find the port free of every other process, orphans included."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what the servers themselves will set
        if share:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e
    return None


def check_ports(opts: ServerOptions, *, share: bool = False) -> None:
    """A port in use is reported at once, in TF Serving's words, with exit 255 (not after loading every model,
    and not as a traceback followed by an abort in TensorFlow's threads)."""
    if opts.port:
        err = port_free(opts.grpc_bind_address, opts.port, share=share)
        if err is not None:
            log.error("gRPC port %s: %s", host_port(opts.grpc_bind_address, opts.port), err.strerror)
            raise InvalidArgumentError("Failed to BuildAndStart gRPC server")
    if opts.rest_api_port and opts.rest_api_port != opts.port:
        err = port_free(opts.rest_api_bind_address, opts.rest_api_port, share=share)
        if err is not None:
            raise InvalidArgumentError(f"Failed to start HTTP Server at {opts.rest_api_bind_address}:"
                                       f"{opts.rest_api_port}: {err.strerror}")
