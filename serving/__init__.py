"""Embedded model server: wire- and config-compatible with TensorFlow Serving's tensorflow_model_server."""

__version__ = "0.1.0"


def program_name(module: str) -> str:
    """What a usage line calls a command: the console script's own name when run as one (`tfsb-client`),
    else `python -m <module>`."""
    import os
    import sys

    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("tfsb-") else f"python -m {module}"
