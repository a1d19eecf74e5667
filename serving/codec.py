"""Compatibility alias: the TensorProto codec is `serving.wire.tensor_proto` (this name is that module).
Kept so code written against the earlier layout (`from serving import codec`) keeps working."""

import sys

from serving.wire import tensor_proto

sys.modules[__name__] = tensor_proto
