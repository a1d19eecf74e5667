"""Replay `assets.extra/tf_serving_warmup_requests` against a freshly loaded version before it becomes
AVAILABLE (TF Serving's `saved_model_warmup.cc`), so the first real request does not pay for lazy
initialisation. Any failure fails the load, exactly like TF Serving."""

from __future__ import annotations

import os
import time

from tensorflow_serving.apis import prediction_log_pb2

from tfsb.server.core import WARMUP_API, ExampleApi, Inference
from tfsb.errors import DataLossError, InvalidArgumentError, ServingError, UnimplementedError
from tfsb.server.runtime import SavedModelServable, tf
from tfsb.wire import tensor_proto
from tfsb.wire.spec import spec_from_proto

WARMUP_PATH = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000


def _records(path: str):
    from tensorflow.python.lib.io import tf_record

    try:
        yield from tf_record.tf_record_iterator(path)
    except tf().errors.DataLossError as e:
        raise DataLossError(f"{e.message}. Please verify your warmup data is in TFRecord format.") from e


def run_warmup(inference: Inference, servable: SavedModelServable, version: int, version_dir: str,
               iterations: int = 1) -> int:
    """Replay every record; returns the number of records read (0 when there is no warmup file)."""
    path = os.path.join(version_dir, WARMUP_PATH)
    if not os.path.exists(path):
        return 0
    t0 = time.monotonic()
    n = 0
    try:
        for raw in _records(path):
            try:
                log = prediction_log_pb2.PredictionLog.FromString(raw)
            except Exception as e:  # noqa: BLE001 - protobuf's DecodeError
                raise InvalidArgumentError(f"Failed to parse warmup record: {e} from {path}") from e
            for _ in range(max(1, iterations)):
                _replay(inference, servable, version, log)
            n += 1
            if n > MAX_RECORDS:
                raise InvalidArgumentError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
    except ServingError as e:
        inference.metrics.warmup(version_dir, e.code.name, time.monotonic() - t0, n)
        raise
    inference.metrics.warmup(version_dir, "OK", time.monotonic() - t0, n)
    return n


def _replay(inference: Inference, servable: SavedModelServable, version: int, log) -> None:
    kind = log.WhichOneof("log_type")
    if kind is None:
        return
    if kind == "predict_log":
        req = log.predict_log.request
        inputs = {k: tensor_proto.to_numpy(v) for k, v in req.inputs.items()}
        inference.predict_on(servable, version, spec_from_proto(req.model_spec), inputs, list(req.output_filter),
                             api=WARMUP_API)
    elif kind in ("classify_log", "regress_log"):
        req = getattr(log, kind).request
        inference.examples_on(servable, spec_from_proto(req.model_spec), req.input, ExampleApi(kind[:-4]))
    elif kind == "multi_inference_log":
        inference.multi_inference_on(servable, version, log.multi_inference_log.request)
    else:
        num = log.DESCRIPTOR.fields_by_name[kind].number
        raise UnimplementedError(f"Unsupported log_type for warmup: {num}")
