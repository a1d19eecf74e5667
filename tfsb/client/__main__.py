"""`python -m tfsb.client`: predict, classify, regress, status, metadata, label set/promote, ab.

Human-readable output by default; `--json` prints one JSON document for scripts."""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np

from tfsb import program_name


def _grpc_client(args):
    from tfsb.client import GrpcClient
    from tfsb.client.base import TlsFiles

    tls = None
    if args.tls_ca or args.tls_cert or args.tls_key or args.tls_server_name:
        tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    try:
        return GrpcClient(args.grpc_target, timeout=args.timeout, tls=tls)
    except (OSError, ValueError) as e:
        raise SystemExit(f"TLS: {e}") from None


def _client(args):
    from tfsb.client import RestClient

    if args.rest:
        return RestClient(args.rest_url, timeout=args.timeout)
    return _grpc_client(args)


def _load_json(text: str):
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    return json.loads(text)


def _inputs(args):
    if args.npy:
        named = {}
        for item in args.npy:
            name, eq, path = item.partition("=")
            if not eq:
                return np.load(item, allow_pickle=False)
            named[name] = np.load(path, allow_pickle=False)
        return named
    if args.input is None:
        raise SystemExit("give --input JSON (or @file.json) or --npy FILE")
    return _load_json(args.input)


def _jsonable(v):
    if isinstance(v, np.ndarray):
        if v.dtype == object:
            return [_jsonable(x) for x in v.tolist()] if v.ndim else _jsonable(v.item())
        return v.tolist()
    if isinstance(v, bytes):
        try:
            return v.decode()
        except UnicodeDecodeError:
            import base64

            return {"b64": base64.b64encode(v).decode()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def _print(args, doc, human):
    if args.json:
        print(json.dumps(_jsonable(doc)))
    else:
        human(doc)


def cmd_predict(args):
    out = _client(args).predict(args.model, _inputs(args), signature=args.signature, version=args.version,
                                label=args.label)

    def human(d):
        for k, v in sorted(d.items()):
            print(f"{k}  {v.dtype}  shape={list(v.shape)}")
            print(np.array2string(v, threshold=50) if v.dtype != object else _jsonable(v))
    _print(args, out, human)


def cmd_examples(args):
    rows = _load_json(args.examples)
    fn = getattr(_client(args), args.cmd)
    out = fn(args.model, rows, signature=args.signature, version=args.version, label=args.label)

    def human(d):
        for i, row in enumerate(d if args.cmd == "classify" else d.tolist()):
            print(f"example {i}: " + (", ".join(f"{lbl}={s:.4f}" for lbl, s in row) if args.cmd == "classify"
                                       else f"{row:.6g}"))
    _print(args, out, human)


def cmd_status(args):
    out = _client(args).status(args.model, version=args.version)

    def human(rows):
        print(f"{'version':>8}  {'state':<10} error")
        for r in rows:
            print(f"{r['version']:>8}  {r['state']:<10} {r['error_message']}")
    _print(args, out, human)


def cmd_metadata(args):
    out = _client(args).metadata(args.model, version=args.version, label=args.label)

    def human(d):
        print(f"model {d['model']} version {d['version']}")
        print(f"{'signature':<18} {'method':<28} {'kind':<6} {'name':<16} {'dtype':<10} shape")
        for name, sd in d["signature_def"].items():
            for kind in ("inputs", "outputs"):
                for alias, t in sd[kind].items():
                    print(f"{name:<18} {sd['method_name']:<28} {kind[:-1]:<6} {alias:<16} {t['dtype']:<10} "
                          f"{t['shape']}")
    _print(args, out, human)


def _config_path(args) -> str:
    if args.config:
        return args.config
    # `make serve` with the Docker backend mounts config/ (container paths); the embedded one runs on run/
    docker = Path("run/backend").exists() and Path("run/backend").read_text().strip() == "docker"
    for p in (("config/models.config",) if docker else ("run/models.config", "config/models.config")):
        if Path(p).exists():
            return p
    raise SystemExit("no --config given and neither run/models.config nor config/models.config exists")


def _replicas(args, client) -> list:
    """The other servers the change must reach: --replica targets and a compose service's containers."""
    from tfsb.client import GrpcClient
    from tfsb.client.rollout import docker_replicas

    targets = list(args.replica or [])
    if args.docker_service:
        targets += docker_replicas(args.docker_service)
    return [GrpcClient(t, timeout=args.timeout, tls=client.tls) for t in targets
            if t != client.target]


def cmd_label(args):
    from tfsb.client.rollout import promote, set_labels

    client = _grpc_client(args)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    from tfsb.client.base import ServingClientError

    try:
        if args.action == "set":
            labels = {}
            for item in args.mapping:
                k, eq, v = item.partition("=")
                if not eq or not v.strip().isdigit():
                    raise SystemExit(f"error: expected LABEL=VERSION (a version number), got {item!r}")
                labels[k] = int(v)
            new = set_labels(_config_path(args), client, args.model, labels, replicas=_replicas(args, client),
                             log=log)
        else:
            new = promote(_config_path(args), client, args.model, args.mapping[0], args.mapping[1],
                          replicas=_replicas(args, client), log=log)
    except ServingClientError as e:
        raise SystemExit(f"error: {e.code}: {e.message}") from None
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}") from None
    _print(args, {"model": args.model, "labels": new},
           lambda d: print(f"{d['model']} labels: " + ", ".join(f"{k}→{v}" for k, v in sorted(d["labels"].items()))))


def _sample_inputs(client, model: str, signature: str, seed: int) -> dict:
    """Random inputs shaped and typed after the signature's metadata (unknown dims 1)."""
    sigs = client.metadata(model)["signature_def"]
    name = signature or "serving_default"
    if name not in sigs:
        raise SystemExit(f"error: model {model} has no signature {name!r} (it has: {', '.join(sigs)})")
    rng = np.random.default_rng(seed)
    out = {}
    for alias, spec in sigs[name]["inputs"].items():
        shape = [1 if d in (-1, None) else d for d in (spec["shape"] or [1])]
        dtype = spec["dtype"]
        if dtype == "DT_STRING":
            out[alias] = np.full(shape, b"a", dtype=object)
        elif dtype in ("DT_FLOAT", "DT_DOUBLE", "DT_HALF"):
            out[alias] = rng.random(shape).astype(np.float32 if dtype == "DT_FLOAT" else np.float64)
        elif dtype == "DT_BOOL":
            out[alias] = np.ones(shape, bool)
        else:
            out[alias] = np.ones(shape, np.int64 if dtype == "DT_INT64" else np.int32)
    return out


def cmd_rollout(args):
    from tfsb.client import canary
    from tfsb.client.rollout import docker_replicas

    client = _grpc_client(args)
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    servers = [canary.Server(client, args.rest_url)]
    rest = list(args.replica_rest or [])
    grpc_targets = list(args.replica or [])
    if not rest and all(t.rsplit(":", 1)[-1] == "8500" for t in grpc_targets):
        rest = [f"http://{t.rsplit(':', 1)[0]}:8501" for t in grpc_targets]  # TF Serving's port pair
    if len(rest) != len(grpc_targets):
        raise SystemExit("error: give one --replica-rest URL for each --replica (in the same order); only "
                         "replicas on TF Serving's ports 8500/8501 need none")
    if args.docker_service:
        for t in docker_replicas(args.docker_service):
            grpc_targets.append(t)
            rest.append(f"http://{t.rsplit(':', 1)[0]}:8501")
    from tfsb.client import GrpcClient

    servers += [canary.Server(GrpcClient(t, timeout=args.timeout, tls=client.tls), r)
                for t, r in zip(grpc_targets, rest) if t != client.target]
    try:
        steps = tuple(int(x) for x in args.steps.split(",") if x.strip())
    except ValueError:
        raise SystemExit(f"error: --steps is a comma-separated list of percentages, not {args.steps!r}") from None
    if not steps or any(not 0 < p <= 100 for p in steps) or list(steps) != sorted(steps):
        raise SystemExit("error: --steps must be increasing percentages in (0, 100]")
    gates = canary.Gates(max_error_rate=args.max_error_rate, max_p99_ratio=args.max_p99_ratio,
                         max_abs_diff=args.max_abs_diff, max_rel_diff=args.max_rel_diff,
                         min_agreement=args.min_agreement, min_requests=args.min_requests)
    plan = canary.Plan(args.model, args.to, args.baseline_label, args.canary_label, args.split_label,
                       args.shadow_fraction, steps, args.hold, args.hold_requests, gates, args.max_hold)
    from tfsb.client.base import ServingClientError

    try:
        outcome = canary.run(plan, _config_path(args), servers, traffic_file=args.traffic_file,
                             dry_run=args.dry_run, log=log)
    except ServingClientError as e:
        raise SystemExit(f"error: {e.code}: {e.message}") from None
    except KeyError as e:
        raise SystemExit(f"error: {e.args[0]}") from None
    evidence = args.evidence or f"rollout-{args.model}-v{args.to}.json"
    canary.save(outcome, evidence)
    _print(args, outcome.to_doc(), lambda d: print(f"{d['model']} version {d['version']}: {d['result']}"
                                                    f"{' (' + d['reason'] + ')' if d['reason'] else ''}; "
                                                    f"evidence in {evidence}"))
    if outcome.result == "rolled back":
        raise SystemExit(3)


def cmd_ab(args):
    from collections import Counter

    from tfsb.client.ab import ABRouter, parse_weights
    from tfsb.client.base import ServingClientError

    try:
        router = ABRouter(parse_weights(args.weights))
    except ValueError as e:
        raise SystemExit(f"error: --weights: {e} (expected LABEL=WEIGHT,... e.g. stable=90,canary=10)") from None
    client = _client(args)
    rng = random.Random(args.seed)
    fixed = _load_json(args.input) if args.input else None
    if fixed is not None and not isinstance(fixed, dict):
        raise SystemExit('error: --input must be a JSON object of named inputs, e.g. \'{"x": [[1.0]]}\'')
    generated = None if fixed is not None else _sample_inputs(client, args.model, args.signature, args.seed)
    reasons: Counter = Counter()
    for i in range(args.requests):
        key = f"user-{rng.randrange(args.users)}"
        inputs = fixed if fixed is not None else generated
        try:
            router.predict(client, args.model, inputs, key, signature=args.signature)
        except ServingClientError as e:
            reasons[f"{router.label_for(key)}: {e.code}: {e.message}"] += 1
    report = router.report()

    def human(r):
        for k, v in r.items():
            p50 = "-" if v["count"] == v["errors"] else f"{v['p50_ms']}ms"
            p99 = "-" if v["count"] == v["errors"] else f"{v['p99_ms']}ms"
            versions = ", ".join(f"v{ver}: {n}" for ver, n in v["versions"].items()) or "-"
            print(f"{k:<10} share={v['share']:.3f} (requested {v['weight']:.3f}) count={v['count']} "
                  f"errors={v['errors']} p50={p50} p99={p99} answered by {versions}")
        worst = max(r.values(), key=lambda v: abs(v["share"] - v["weight"]))
        print(f"observed split vs requested weights: largest difference {abs(worst['share'] - worst['weight']):.3f}")

    _print(args, report, human)  # the reasons for failures go to stderr below, in both modes
    if reasons:
        print(f"{sum(reasons.values())} request(s) failed:", file=sys.stderr)
        for why, n in reasons.most_common(10):
            print(f"  {n} x {why}", file=sys.stderr)
        raise SystemExit(1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog=program_name("tfsb.client"), description=__doc__)
    p.add_argument("--grpc-target", default="localhost:8500", help="gRPC host:port (default %(default)s)")
    p.add_argument("--rest-url", default="http://localhost:8501", help="REST base URL (default %(default)s)")
    proto = p.add_mutually_exclusive_group()
    proto.add_argument("--grpc", action="store_true", help="use gRPC (default)")
    proto.add_argument("--rest", action="store_true", help="use REST")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)")
    p.add_argument("--tls-ca", help="gRPC over TLS: PEM file of the CA that signed the server certificate")
    p.add_argument("--tls-cert", help="gRPC over TLS: this client's certificate (PEM), for servers that verify "
                                      "clients (SSLConfig client_verify)")
    p.add_argument("--tls-key", help="gRPC over TLS: the private key (PEM) of --tls-cert")
    p.add_argument("--tls-server-name", help="gRPC over TLS: the name to expect in the server certificate when "
                                             "it differs from the target's host")
    sub = p.add_subparsers(dest="cmd", required=True)

    def target(sp, label=True):
        sp.add_argument("model", help="model name")
        g = sp.add_mutually_exclusive_group()
        g.add_argument("--version", type=int, help="a specific version (default: the latest)")
        if label:
            g.add_argument("--label", help="a version label, e.g. stable or canary")

    sp = sub.add_parser("predict", help="Predict with JSON (--input) or .npy (--npy) inputs")
    target(sp)
    sp.add_argument("--signature", default="", help="signature name (default serving_default)")
    sp.add_argument("--input", help='JSON object of named inputs, e.g. \'{"x": [[1.0]]}\', or @file.json')
    sp.add_argument("--npy", action="append", help="FILE (single input) or NAME=FILE, repeatable")
    sp.set_defaults(fn=cmd_predict)
    for verb in ("classify", "regress"):
        sp = sub.add_parser(verb, help=f"{verb.capitalize()} tf.Examples given as JSON rows")
        target(sp)
        sp.add_argument("--signature", default="", help="signature name (default serving_default)")
        sp.add_argument("--examples", required=True, help='JSON list of feature dicts or @file.json')
        sp.set_defaults(fn=cmd_examples)
    sp = sub.add_parser("status", help="version states of a model")
    target(sp, label=False)
    sp.set_defaults(fn=cmd_status, label=None)
    sp = sub.add_parser("metadata", help="signatures of a model as a table")
    target(sp)
    sp.set_defaults(fn=cmd_metadata)
    sp = sub.add_parser("label", help="label set MODEL LABEL=VERSION... | label promote MODEL SRC DST")
    sp.add_argument("action", choices=["set", "promote"], help="set LABEL=VERSION..., or promote SOURCE TARGET")
    sp.add_argument("model", help="model name")
    sp.add_argument("mapping", nargs="+", help="LABEL=VERSION pairs (set) or SOURCE TARGET labels (promote)")
    sp.add_argument("--config", help="the models.config the server runs on (default run/ or config/); when it "
                                     "was rendered from a template, the template is edited too")
    sp.add_argument("--replica", action="append", metavar="HOST:PORT",
                    help="another replica's gRPC address to reload and verify (repeatable)")
    sp.add_argument("--docker-service", metavar="[PROJECT/]SERVICE",
                    help="reload and verify every running container of this compose service (docker SDK)")
    sp.set_defaults(fn=cmd_label)
    sp = sub.add_parser("rollout", help="gated rollout of a version: shadow, weighted steps, promote or roll back",
                        description="Point the canary label at VERSION, mirror a share of live traffic to it "
                                    "(shadow phase), then send growing shares of the split label's requests to "
                                    "it; each step is held and judged by gates (error rate, p99 ratio, output "
                                    "difference). Passing every step promotes (baseline label → VERSION); a "
                                    "failed gate restores labels and traffic settings on every server. Needs "
                                    "the embedded server (PUT /api/traffic). Exit 0 promoted, 3 rolled back.")
    sp.add_argument("model", help="model name")
    sp.add_argument("--to", type=int, required=True, metavar="VERSION", help="the version to roll out")
    sp.add_argument("--config", help="the models.config the servers run on (as for `label`)")
    sp.add_argument("--replica", action="append", metavar="HOST:PORT", help="another replica's gRPC address")
    sp.add_argument("--replica-rest", action="append", metavar="URL",
                    help="that replica's REST URL (one per --replica, same order; default http://HOST:8501 when "
                         "every --replica is on port 8500)")
    sp.add_argument("--docker-service", metavar="[PROJECT/]SERVICE",
                    help="every running container of this compose service (gRPC 8500, REST 8501)")
    sp.add_argument("--traffic-file", help="the --traffic_config_file the servers read: kept in step with them")
    sp.add_argument("--baseline-label", default="stable", help="label serving today (default %(default)s)")
    sp.add_argument("--canary-label", default="canary", help="label for the new version (default %(default)s)")
    sp.add_argument("--split-label", default="rollout", help="opt-in label whose requests are split by weight "
                                                            "(default %(default)s)")
    sp.add_argument("--shadow-fraction", type=float, default=0.1,
                    help="share of live requests mirrored in the shadow phase (0: no shadow phase; default "
                         "%(default)s)")
    sp.add_argument("--steps", default="5,25,50,100", help="canary percentages of the split label's requests "
                                                          "(default %(default)s)")
    sp.add_argument("--hold", type=float, default=30.0, help="seconds each step is held (default %(default)s)")
    sp.add_argument("--hold-requests", type=int, default=0,
                    help="end a step early once the canary answered this many requests (default: time only)")
    sp.add_argument("--max-hold", type=float, default=None,
                    help="a step without --min-requests answers yet is held up to this long before it fails "
                         "for want of evidence (default 4 x --hold)")
    sp.add_argument("--max-error-rate", type=float, default=0.01, help="gate (default %(default)s)")
    sp.add_argument("--max-p99-ratio", type=float, default=4.0,
                    help="gate: canary p99 / baseline p99 (default %(default)s)")
    sp.add_argument("--max-abs-diff", type=float, default=1e-3, help="gate on shadow outputs (default %(default)s)")
    sp.add_argument("--max-rel-diff", type=float, default=None, help="gate on shadow outputs (default: off)")
    sp.add_argument("--min-agreement", type=float, default=0.99,
                    help="gate: shadow classify top-class agreement (default %(default)s)")
    sp.add_argument("--min-requests", type=int, default=20,
                    help="fewer canary requests in a step fail it (default %(default)s)")
    sp.add_argument("--evidence", help="JSON file for every step's evidence (default rollout-MODEL-vVERSION.json)")
    sp.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    sp.set_defaults(fn=cmd_rollout)
    sp = sub.add_parser("ab", help="weighted, sticky A/B traffic across labels (gRPC, or REST with --rest)",
                        description="Send --requests predicts, each from one of --users simulated users; a user "
                                    "always lands on the same label while the weights stay the same. Prints per-"
                                    "label share, count, errors and latency; lists why requests failed and exits "
                                    "1 if any did.")
    sp.add_argument("--model", required=True, help="model name")
    sp.add_argument("--weights", default="stable=90,canary=10", help="LABEL=WEIGHT,... (default %(default)s)")
    sp.add_argument("--signature", default="", help="signature name (default serving_default)")
    sp.add_argument("--input", help='JSON object of named inputs sent with every request, or @file.json '
                                    '(default: random inputs shaped after the signature)')
    sp.add_argument("--requests", type=int, default=1000, help="number of requests (default %(default)s)")
    sp.add_argument("--users", type=int, default=500, help="distinct simulated users (default %(default)s)")
    sp.add_argument("--seed", type=int, default=0, help="random seed for users and inputs (default %(default)s)")
    sp.set_defaults(fn=cmd_ab)
    args = p.parse_args(argv)
    if args.cmd == "label" and args.action == "promote" and len(args.mapping) != 2:
        p.error("label promote MODEL SOURCE TARGET")
    from tfsb.client.base import ServingClientError

    try:
        args.fn(args)
    except json.JSONDecodeError as e:
        print(f"error: not valid JSON ({e})", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ServingClientError as e:
        if args.json:
            print(json.dumps({"error": e.message, "code": e.code, "http_status": e.http_status}))
        else:
            print(f"error: {e.code} ({e.http_status}): {e.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
