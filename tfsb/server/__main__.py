"""`python -m tfsb.server --port=8500 --rest_api_port=8501 --model_config_file=...` (tensorflow_model_server flags)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's oneDNN graph rewrites off unless asked for (TF_ENABLE_ONEDNN_OPTS=1), before TensorFlow is
# imported: tensorflow_model_server's release build (`--config=release`, not `--config=mkl`) has no oneDNN
# kernels, so this runs the same Eigen kernels, with the same round-off, as the official image; and for small
# models it is cheaper (measured with the mlp demo model: 24-27 µs less server CPU per gRPC request).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(argv: list[str] | None = None) -> int:
    from tfsb.server.flags import FlagError, parse_flags, usage

    argv = sys.argv[1:] if argv is None else argv
    try:
        opts = parse_flags(argv)
    except FlagError as e:
        print(e)
        print(usage())
        return 255
    if opts.unknown and opts.unknown[0] in ("--help", "-h", "--helpfull"):
        print(usage())
        return 255
    if opts.version:
        import tensorflow as tf

        from tfsb import __version__

        print(f"TensorFlow ModelServer: {__version__}-embedded\nTensorFlow Library: {tf.__version__}")
        return 0
    if opts.unknown:
        print(f"unknown argument: {opts.unknown[0]}")
        print(usage())
    from tfsb.server import workers

    if opts.num_server_processes > 1 and not workers.is_worker():
        return workers.supervise(argv, opts)
    if workers.is_worker():
        workers.die_with_supervisor()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    log = logging.getLogger("tfsb.server")
    grace = float(max(0, opts.shutdown_grace_period_seconds))
    running: list = []  # the server, once started

    def on_signal(signum, _frame):
        if not running:  # still starting (imports, model loads): no port is open, nothing to drain
            log.info("signal %d during start-up: exiting before serving", signum)
            workers.remove_orphaned_control()
            logging.shutdown()
            os._exit(0)
        server = running[0]
        if server.stopping:
            return
        # an orphaned worker leaves at once: its supervisor is gone and another server may want the ports
        g = min(grace, _ORPHAN_GRACE_S) if workers.orphaned() else grace
        log.info("signal %d: draining in-flight requests and shutting down (grace %.1fs)", signum, g)
        threading.Thread(target=server.stop, args=(g,), name="shutdown", daemon=True).start()

    # Installed before start-up: a SIGTERM while models load (a rollout, a supervisor stopping its workers)
    # ends the process cleanly instead of killing it with the default action.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from tfsb.errors import ServingError
    from tfsb.server.server import build_and_start

    try:
        server = build_and_start(opts)
    except ServingError as e:
        print(f"Failed to start server. Error: {e}", flush=True)
        # models may be loaded and TF/gRPC threads running: leave without the interpreter's teardown
        # (joining them, or TensorFlow aborting in a destructor)
        logging.shutdown()
        os._exit(255)

    running.append(server)
    # The kernel may deliver SIGTERM to any thread (gRPC, TF and uvicorn threads are many); Python runs the
    # handler only when the *main* thread next executes bytecode. A bounded wait keeps the main thread
    # coming back, so one SIGTERM is always handled (Kubernetes sends exactly one before SIGKILL).
    while not server.wait(0.2):
        pass
    # Exit within the grace period plus a small bound, whatever is still running (a model call that
    # ignores cancellation, a client that never reads): the process must be gone before SIGKILL.
    if not server.stopped.wait(grace + _EXIT_SLACK_S):
        log.error("shutdown did not finish within %.0fs; exiting anyway", grace + _EXIT_SLACK_S)
        logging.shutdown()
        os._exit(1)
    log.info("shut down cleanly")
    workers.remove_orphaned_control()
    logging.shutdown()
    sys.stdout.flush()
    # Worker threads still inside a cancelled model call would make the interpreter's exit wait for them.
    os._exit(0)


_EXIT_SLACK_S = 3.0
_ORPHAN_GRACE_S = 0.5


if __name__ == "__main__":
    sys.exit(main())
