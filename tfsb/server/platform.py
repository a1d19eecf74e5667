"""How versions of a platform are loaded: TF Serving's `SessionBundleConfig`, built either from the flags
(`server.cc`, `--platform_config_file` unset) or taken from a `PlatformConfigMap` file, and the loader that
applies it (SavedModel or, with `prefer_tflite_model`, `model.tflite`; batching; warmup).

With `--platform_config_file` the batching, session, tag, warmup and TFLite flags are ignored, exactly as in
TF Serving: the file's `legacy_config` is the whole story.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from dataclasses import dataclass

from tfsb.server.config import BatchingParameters, parse_platform_config, parse_text_file
from tfsb.errors import InvalidArgumentError, ServingError
from tfsb.server.flags import ServerOptions

log = logging.getLogger("tfsb.server")

TFLITE_FILE = "model.tflite"
INLINE_INTER_OP = -1  # ConfigProto: a negative inter_op_parallelism_threads runs ops in the caller's thread


@dataclass(frozen=True)
class LoadSettings:
    """The parts of a SessionBundleConfig the embedded server applies."""

    session_config: object  # tensorflow.ConfigProto
    tags: tuple[str, ...] = ("serve",)
    batching: object | None = None  # BatchOptions when batching is on
    per_model_batching: bool = False
    warmup: bool = True
    warmup_iterations: int = 0
    prefer_tflite: bool = False
    tflite_pools: int = 1
    tflite_interpreters_per_pool: int = 1


def session_config_from_flags(opts: ServerOptions):
    """server.cc: the session config file, then the parallelism flags on top."""
    from tensorflow.core.protobuf import config_pb2

    cfg = config_pb2.ConfigProto()
    if opts.tensorflow_session_config_file:
        parse_text_file(opts.tensorflow_session_config_file, config_pb2.ConfigProto, into=cfg)
    intra, inter, both = (opts.tensorflow_intra_op_parallelism, opts.tensorflow_inter_op_parallelism,
                          opts.tensorflow_session_parallelism)
    if intra > 0 and inter > 0 and both > 0:
        raise InvalidArgumentError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all.")
    if intra > 0 or inter > 0:
        cfg.intra_op_parallelism_threads = intra
        cfg.inter_op_parallelism_threads = inter
    elif both > 0:
        cfg.intra_op_parallelism_threads = both
        cfg.inter_op_parallelism_threads = both
    elif not opts.tensorflow_session_config_file and opts.tensorflow_inter_op_parallelism == 0:
        # Nothing chosen: run the graph on the thread that decoded the request instead of handing it to TF's
        # inter-op pool and waiting (measured: ~17 µs instead of ~50 µs of CPU per mlp call, the hand-off
        # costing more than the model). Ops still use the intra-op pool for their own parallelism.
        cfg.inter_op_parallelism_threads = INLINE_INTER_OP
    if opts.per_process_gpu_memory_fraction:
        cfg.gpu_options.per_process_gpu_memory_fraction = opts.per_process_gpu_memory_fraction
    return cfg


def _batch_options(proto):
    from tfsb.server.batching import BatchOptions

    return BatchOptions.from_proto(proto, default_threads=os.cpu_count() or 1)


def settings_from_flags(opts: ServerOptions) -> dict[str, LoadSettings]:
    if opts.batching_parameters_file and not opts.enable_batching:
        raise InvalidArgumentError("server_options.batching_parameters_file is set without setting "
                                   "server_options.enable_batching to true.")
    batching = None
    if opts.enable_batching:
        proto = parse_text_file(opts.batching_parameters_file, BatchingParameters) \
            if opts.batching_parameters_file else BatchingParameters()
        batching = _batch_options(proto)
    return {"tensorflow": LoadSettings(
        session_config=session_config_from_flags(opts),
        tags=tuple(t.strip() for t in opts.saved_model_tags.split(",") if t.strip()),
        batching=batching, per_model_batching=opts.enable_batching and opts.enable_per_model_batching_parameters,
        warmup=opts.enable_model_warmup, warmup_iterations=opts.num_request_iterations_for_warmup,
        prefer_tflite=opts.prefer_tflite_model, tflite_pools=max(1, opts.num_tflite_pools),
        tflite_interpreters_per_pool=max(1, opts.num_tflite_interpreters_per_pool))}


def settings_from_platform_file(path: str) -> dict[str, LoadSettings]:
    out = {}
    for platform, sb in parse_platform_config(path).items():
        batching = _batch_options(sb.batching_parameters) if sb.HasField("batching_parameters") else None
        warm = sb.model_warmup_options
        out[platform] = LoadSettings(
            session_config=sb.session_config, tags=tuple(sb.saved_model_tags) or ("serve",), batching=batching,
            per_model_batching=batching is not None and sb.enable_per_model_batching_params,
            warmup=sb.enable_model_warmup,
            warmup_iterations=warm.num_request_iterations.value if warm.HasField("num_request_iterations") else 0,
            prefer_tflite=sb.prefer_tflite_model, tflite_pools=max(1, sb.num_tflite_pools or os.cpu_count() or 1),
            tflite_interpreters_per_pool=max(1, sb.num_tflite_interpreters_per_pool))
    return out


def load_settings(opts: ServerOptions) -> dict[str, LoadSettings]:
    """{platform: settings}: the platforms a model config may name are exactly these keys."""
    if opts.platform_config_file:
        return settings_from_platform_file(opts.platform_config_file)
    return settings_from_flags(opts)


class Loader:
    """`(model, version, path) -> servable` for the version manager: picks the model's platform settings,
    loads SavedModel or TFLite, wraps it in its batch scheduler, replays warmup. Any failure closes what was
    opened."""

    def __init__(self, settings: dict[str, LoadSettings], inference):
        self._settings = settings
        self._inference = inference  # tfsb.server.core.Inference: warmup replays through the request path
        self._metrics = inference.metrics
        self._shared = {}  # platform -> the global BatchScheduler (not per model)
        for platform, s in settings.items():
            if s.batching is not None and not s.per_model_batching:
                from tfsb.server.batching import BatchScheduler

                self._shared[platform] = BatchScheduler(s.batching, self._metrics)
                log.info("batching on for platform %s: %s", platform, s.batching)

    def for_platform(self, platform: str):
        """`(model, version, path) -> servable` for the models of one platform (the registry asks per model)."""
        return functools.partial(self, platform=platform)

    def __call__(self, model: str, version: int, path: str, platform: str = "tensorflow"):
        s = self._settings[platform]
        t0 = time.monotonic()
        try:
            servable = self._open(s, path)
        except ServingError:
            self._metrics.load(path, False, time.monotonic() - t0)
            raise
        self._metrics.load(path, True, time.monotonic() - t0)
        try:
            servable = self._with_batching(servable, platform, s, path)
            if s.warmup:
                from tfsb.server.warmup import run_warmup

                n = run_warmup(self._inference, servable, version, path, s.warmup_iterations)
                if n:
                    log.info("model %s version %d: replayed %d warmup record(s)", model, version, n)
        except BaseException:
            servable.close()
            raise
        return servable

    @staticmethod
    def _open(s: LoadSettings, path: str):
        if s.prefer_tflite and os.path.isfile(os.path.join(path, TFLITE_FILE)):
            from tfsb.server.tflite import TfLiteServable

            return TfLiteServable(os.path.join(path, TFLITE_FILE), pools=s.tflite_pools,
                                  interpreters_per_pool=s.tflite_interpreters_per_pool)
        from tfsb.server.runtime import SavedModelServable

        return SavedModelServable(path, s.tags, session_config=s.session_config)

    def _with_batching(self, servable, platform: str, s: LoadSettings, path: str):
        """The servable behind the platform's global scheduler, or with per-model batching behind the version's
        own batching_params.pbtxt (no file: the version is not batched), like TF Serving."""
        from tfsb.server.batching import BatchedServable

        if platform in self._shared:
            return BatchedServable(servable, self._shared[platform])
        if s.batching is not None:
            per_model = os.path.join(path, "batching_params.pbtxt")
            if os.path.exists(per_model):
                from tfsb.server.batching import BatchOptions, BatchScheduler

                p = parse_text_file(per_model, BatchingParameters)
                scheduler = BatchScheduler(BatchOptions.from_proto(p, s.batching.num_batch_threads), self._metrics)
                return BatchedServable(servable, scheduler)
        return servable
