"""One `mlp` session call per request, for the floors' `--model` option: the canned-answer servers plus
exactly the model call the project's server makes (the same runtime class, session settings and TensorFlow
kernels), so `make profile` can show what the model call alone costs inside each transport."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # as the server's entry point sets it


def model_call(version_dir: str) -> Callable[[], object]:
    """A no-argument function running the version's default signature once on a fixed batch-1 input."""
    import numpy as np

    from tfsb.server.flags import parse_flags
    from tfsb.server.platform import session_config_from_flags
    from tfsb.server.runtime import SavedModelServable

    servable = SavedModelServable(version_dir, session_config=session_config_from_flags(parse_flags([])))
    sig = servable.signatures["serving_default"]
    (alias, spec), = sig.inputs.items()
    width = servable.signature_defs["serving_default"].inputs[alias].tensor_shape.dim[-1].size
    inputs = {alias: np.random.default_rng(1).random((1, width), dtype=np.float32)}
    outputs = list(sig.output_order)
    return lambda: servable.run_signature(sig, dict(inputs), outputs)
