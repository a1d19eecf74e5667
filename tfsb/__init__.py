"""tf-serving-bundle: from a trained TensorFlow model to production serving.

One import package, four parts with dependencies pointing one way:

- `tfsb.server`: the embedded model server, wire- and config-compatible with `tensorflow_model_server`;
- `tfsb.export`: training the demo models and publishing validated SavedModel versions (`tfsb.export.byom`
  for your own);
- `tfsb.client`: the gRPC and REST clients, CLI, A/B router, rollout and load generator, with no TensorFlow;
- `tfsb.wire`, `tfsb.protos`, `tfsb.errors`: what server and client share (codecs, message classes, the
  error hierarchy), also free of TensorFlow.
"""

__version__ = "0.1.0"


def program_name(module: str) -> str:
    """What a usage line calls a command: the console script's own name when run as one (`tfsb-client`),
    else `python -m <module>`."""
    import os
    import sys

    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("tfsb-") else f"python -m {module}"
