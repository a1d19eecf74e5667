"""Flag parsing, config parsing/validation and the error → HTTP/gRPC mapping."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import text_format

from tfsb.server import config as cfgmod
from tfsb.errors import (HTTP_STATUS, Code, FailedPreconditionError, InvalidArgumentError, NotFoundError,
                            ServingError, UnimplementedError)
from tfsb.server.flags import FlagError, parse_flags, unsupported_settings
from tfsb.server.server import validate_options
from tests.conftest import REPO


def test_defaults_are_tensorflow_model_servers():
    o = parse_flags([])
    assert (o.port, o.rest_api_port, o.rest_api_timeout_in_ms, o.model_name) == (8500, 0, 30000, "default")
    assert o.file_system_poll_wait_seconds == 1 and o.model_config_file_poll_wait_seconds == 0
    assert o.max_num_load_retries == 5 and o.load_retry_interval_micros == 60_000_000
    assert o.enable_model_warmup is True and o.enable_batching is False


def test_server_options_is_a_typed_frozen_dataclass_generated_from_the_flag_table():
    import dataclasses

    from tfsb.server.flags import FLAGS, ServerOptions

    fields = {f.name: f for f in dataclasses.fields(ServerOptions)}
    assert set(fields) == {f.name for f in FLAGS} | {"unknown"}
    kinds = {"bool": bool, "int32": int, "int64": int, "float": float, "string": str}
    for flag in FLAGS:
        assert fields[flag.name].type is kinds[flag.kind] and fields[flag.name].default == flag.default
    o = parse_flags(["--port=9000", "--enable_batching"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        o.port = 1
    with pytest.raises(AttributeError):
        o.no_such_flag  # noqa: B018 - a typo is an error, not a silent default
    assert dataclasses.replace(o, port=1).port == 1 and o.port == 9000
    assert o.explicitly_set() == {"port": 9000, "enable_batching": True}
    assert ServerOptions() == parse_flags([])


def test_name_equals_value_and_bool_forms():
    o = parse_flags(["--port=9000", "--enable_batching", "--enable_model_warmup=false", "--model_name=m",
                     "--load_retry_interval_micros=-1", "--per_process_gpu_memory_fraction=0.5"])
    assert (o.port, o.enable_batching, o.enable_model_warmup, o.model_name) == (9000, True, False, "m")
    assert o.load_retry_interval_micros == -1 and o.per_process_gpu_memory_fraction == 0.5


def test_space_separated_value_is_not_applied():
    o = parse_flags(["--port", "9000"])
    assert o.port == 8500
    assert o.unknown == ("--port", "9000")


@pytest.mark.parametrize("arg", ["--enable_batching=1", "--enable_batching=True", "--port=12x", "--port=1.5",
                                 "--port=3000000000"])
def test_malformed_values_are_errors(arg):
    with pytest.raises(FlagError):
        parse_flags([arg])


def test_unknown_arguments_are_collected_not_fatal():
    o = parse_flags(["--no_such_flag=1", "--port=1234"])
    assert o.unknown == ("--no_such_flag=1",) and o.port == 1234


def test_inapplicable_flags_are_reported():
    ignored, fatal = unsupported_settings(parse_flags(["--xla_cpu_compilation_enabled", "--use_alts_credentials",
                                                       "--ssl_config_file=/x", "--enable_profiler=false",
                                                       "--prefer_tflite_model", "--platform_config_file=/p"]))
    assert ignored == ["--xla_cpu_compilation_enabled=True"] and fatal == ["--use_alts_credentials=True"]


@pytest.mark.parametrize("args,msg", [
    (["--port=0", "--model_base_path=/m"], "At least one of server_options.grpc_port or "
                                           "server_options.grpc_socket_path must be set."),
    (["--use_alts_credentials", "--ssl_config_file=/x", "--model_base_path=/m"],
     "Either use_alts_credentials must be false or ssl_config_file must be empty."),
    ([], "Both server_options.model_base_path and server_options.model_config_file are empty!"),
])
def test_startup_validation_messages(args, msg):
    with pytest.raises(InvalidArgumentError) as e:
        validate_options(parse_flags(args))
    assert e.value.message == msg


def _cfg(text: str):
    return text_format.Parse(text, cfgmod.ModelServerConfig())


def test_checked_in_config_validates():
    cfg = cfgmod.parse_text_file(REPO / "config" / "models.config", cfgmod.ModelServerConfig)
    cfgmod.validate(cfg, None)


def test_invalid_protobuf_file_message(tmp_path):
    p = tmp_path / "bad.config"
    p.write_text("model_config_list { config { name: 'x' base_path: }")
    with pytest.raises(InvalidArgumentError, match=f"Invalid protobuf file: '{p}'"):
        cfgmod.parse_text_file(p, cfgmod.ModelServerConfig)


@pytest.mark.parametrize("text,err,msg", [
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
     'config { name: "a" base_path: "/b" model_platform: "tensorflow" } }', InvalidArgumentError,
     "Illegal to list model a multiple times in config list"),
    ('model_config_list { config { name: "a" base_path: "rel/a" model_platform: "tensorflow" } }',
     InvalidArgumentError, "Expected model a to have an absolute path or URI; got base_path()=rel/a"),
    ('model_config_list { config { name: "a" base_path: "/a" } }', InvalidArgumentError,
     "Illegal setting neither ModelConfig::model_type (deprecated) nor ModelConfig::model_platform, model name is a"),
    ('model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }',
     InvalidArgumentError, "Model a requests unsupported platform pytorch"),
])
def test_config_validation_messages(text, err, msg):
    with pytest.raises(err) as e:
        cfgmod.validate(_cfg(text), None)
    assert e.value.message == msg


def test_uri_base_paths_are_accepted():
    cfgmod.validate(_cfg('model_config_list { config { name: "a" base_path: "gs://b/a" '
                         'model_platform: "tensorflow" } }'), None)


def test_transition_rule_and_platform_change():
    old = _cfg('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } }')
    with pytest.raises(FailedPreconditionError, match="only legal to transition from one ModelConfigList"):
        cfgmod.validate(cfgmod.ModelServerConfig(), old)
    cfgmod.validate(_cfg("model_config_list {}"), old)  # empty list is legal: unloads everything


def test_policy_reading():
    m = _cfg('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" '
             'model_version_policy { latest { num_versions: 0 } } } }').model_config_list.config[0]
    assert cfgmod.aspired_policy(m) == ("latest", 1)
    m.ClearField("model_version_policy")
    assert cfgmod.aspired_policy(m) == ("latest", 1)
    m.model_version_policy.specific.versions.extend([3, 5])
    assert cfgmod.aspired_policy(m) == ("specific", frozenset({3, 5}))


@pytest.mark.parametrize("name,v", [("1", 1), ("00000123", 123), ("+5", 5), ("-3", -3), (" 7", 7),
                                    ("1.0", None), ("v1", None), ("0x10", None), ("tmp", None),
                                    (".publishing-1-abc", None)])
def test_version_directory_names_follow_simple_atoi(name, v):
    assert cfgmod.parse_version_name(name) == v


def test_monitoring_and_batching_protos_parse(tmp_path):
    mon = tmp_path / "monitoring.config"
    mon.write_text('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }')
    m = cfgmod.parse_text_file(mon, cfgmod.MonitoringConfig)
    assert cfgmod.prometheus_path(m) == "/monitoring/prometheus/metrics"
    b = tmp_path / "batching.config"
    b.write_text("max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\n"
                 "max_enqueued_batches { value: 1000000 }\nnum_batch_threads { value: 8 }\n"
                 "allowed_batch_sizes: 64\nallowed_batch_sizes: 128\npad_variable_length_inputs: true")
    bp = cfgmod.parse_text_file(b, cfgmod.BatchingParameters)
    assert bp.max_batch_size.value == 128 and list(bp.allowed_batch_sizes) == [64, 128]


def test_error_mapping_table():
    assert HTTP_STATUS[Code.INVALID_ARGUMENT] == 400 and HTTP_STATUS[Code.FAILED_PRECONDITION] == 400
    assert HTTP_STATUS[Code.NOT_FOUND] == 404 and HTTP_STATUS[Code.UNAVAILABLE] == 503
    assert HTTP_STATUS[Code.RESOURCE_EXHAUSTED] == 429 and HTTP_STATUS[Code.DEADLINE_EXCEEDED] == 504
    assert HTTP_STATUS[Code.UNIMPLEMENTED] == 501 and HTTP_STATUS[Code.CANCELLED] == 499
    assert NotFoundError("x").http_status == 404 and UnimplementedError("x").http_status == 501
    for code in Code:
        assert grpc.StatusCode[code.name].value[0] == int(code)
    assert str(ServingError("boom", Code.INTERNAL)) == "INTERNAL: boom"


@pytest.mark.parametrize("which", ["grpc", "rest"])
def test_a_port_in_use_fails_fast_with_exit_255_and_no_traceback(zoo, which):
    import socket
    import subprocess
    import sys
    import time

    from tests.server_util import REPO, free_port

    base, _ = zoo
    holder = socket.socket()
    holder.bind(("0.0.0.0", 0))
    holder.listen(1)
    taken = holder.getsockname()[1]
    grpc_port, rest_port = (taken, free_port()) if which == "grpc" else (free_port(), taken)
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "tfsb.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                            "--model_name=mlp", f"--model_base_path={base}/mlp"], cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    finally:
        holder.close()
    assert r.returncode == 255, r.stdout + r.stderr
    expected = ("Failed to start server. Error: INVALID_ARGUMENT: Failed to BuildAndStart gRPC server"
                if which == "grpc" else
                f"Failed to start server. Error: INVALID_ARGUMENT: Failed to start HTTP Server at 0.0.0.0:{rest_port}")
    assert expected in r.stdout, r.stdout
    assert "Traceback" not in r.stdout + r.stderr and "terminate called" not in r.stderr
    assert "AVAILABLE" not in r.stderr  # refused before loading the model
    assert time.monotonic() - t0 < 60


def test_load_thread_flags_say_they_have_no_effect():
    from tfsb.server.flags import parse_flags, unsupported_settings

    opts = parse_flags(["--num_load_threads=4", "--num_unload_threads=2", "--enable_grpc_healthcheck_service"])
    assert unsupported_settings(opts) == (["--num_load_threads=4", "--num_unload_threads=2"], [])
