"""`python -m serving --port=8500 --rest_api_port=8501 --model_config_file=...` (tensorflow_model_server flags)."""

from __future__ import annotations

import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    from serving.flags import FlagError, parse_flags, usage

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

        from serving import __version__

        print(f"TensorFlow ModelServer: {__version__}-embedded\nTensorFlow Library: {tf.__version__}")
        return 0
    if opts.unknown:
        print(f"unknown argument: {opts.unknown[0]}")
        print(usage())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s.%(msecs)03d %(levelname).1s %(name)s] %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S")
    from serving.errors import ServingError
    from serving.server import build_and_start

    try:
        server = build_and_start(opts)
    except ServingError as e:
        print(f"Failed to start server. Error: {e}", flush=True)
        return 255

    def on_signal(signum, _frame):
        logging.getLogger("serving").info("signal %d: draining in-flight requests and shutting down", signum)
        import threading

        threading.Thread(target=server.stop, args=(float(opts.shutdown_grace_period_seconds),),
                         name="shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.wait()
    server.stopped.wait()
    logging.getLogger("serving").info("shut down cleanly")
    return 0


if __name__ == "__main__":
    sys.exit(main())
