"""`tfsb-client-lite` / `python -m tfsb_client`: predict, status, metadata over gRPC, without TensorFlow."""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tfsb-client-lite", description=__doc__)
    p.add_argument("--target", default="localhost:8500", help="gRPC host:port (default %(default)s)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("predict", help="predict with named JSON inputs")
    sp.add_argument("model")
    sp.add_argument("--input", required=True, help='JSON object of named inputs, e.g. \'{"x": [[1.0]]}\'')
    sp.add_argument("--signature", default="", help="signature name (default serving_default)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--version", type=int)
    g.add_argument("--label")
    for name in ("status", "metadata"):
        s = sub.add_parser(name, help=f"the model's {name}")
        s.add_argument("model")
    args = p.parse_args(argv)
    from tfsb_client import Client, ServingError

    client = Client(args.target, timeout=args.timeout)
    try:
        if args.cmd == "predict":
            try:
                raw = json.loads(args.input)
            except json.JSONDecodeError as e:
                print(f"error: --input is not valid JSON ({e})", file=sys.stderr)
                return 2
            inputs = {k: np.asarray(v, dtype=np.float32) if np.asarray(v).dtype.kind == "f" else np.asarray(v)
                      for k, v in raw.items()}
            out = client.predict(args.model, inputs, signature=args.signature, version=args.version,
                                 label=args.label)
            print(json.dumps({k: (v.tolist() if v.dtype != object else [x.decode(errors="replace") for x in
                                                                         v.ravel().tolist()])
                              for k, v in out.items()}))
        elif args.cmd == "status":
            print(json.dumps(client.status(args.model)))
        else:
            print(json.dumps(client.metadata(args.model)))
    except ServingError as e:
        print(f"error: {e.code}: {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
