"""`dg-lsp serve`: start (or join) a Ray cluster and run the infill API on it until interrupted.

Checks what can be checked before Ray starts (host, token file, Ray installed), then says what it is
doing at each slow step: starting Ray, deploying, each replica loading its model (in the replica logs).
"""

from __future__ import annotations

import signal
import sys
import time


def run(args) -> int:
    from dg_lsp.tcp import tcp_setup

    token, problem = tcp_setup(args.serve_host, args.allow_remote_serve, args.serve_token_file)
    if problem is not None:
        print(f"dg-lsp serve: {problem}", file=sys.stderr)
        return 2
    try:
        import ray
        from ray import serve

        from dg_lsp.serving.app import ServeArgs, build
    except ImportError as exc:
        print(f"dg-lsp serve needs Ray Serve ({exc}): pip install 'dg-lsp[serve]'", file=sys.stderr)
        return 2
    try:
        cfg = ServeArgs(model=args.model, device=args.device, dtype=args.dtype, family=args.family,
                        quantize=args.quantize, replicas=args.replicas, threads=args.threads,
                        token_file=args.serve_token_file, max_body_bytes=args.max_body_bytes,
                        max_batch_size=args.max_batch_size, batch_wait_timeout_s=args.batch_wait_ms / 1000.0,
                        require_token=token is not None)
    except ValueError as exc:
        print(f"dg-lsp serve: {exc}", file=sys.stderr)
        return 2

    print(f"dg-lsp serve: {'joining Ray at ' + args.ray_address if args.ray_address else 'starting a local Ray'}"
          " ...", file=sys.stderr)
    ray.init(address=args.ray_address, include_dashboard=False, log_to_driver=False)
    if args.ray_address is None and (problem := _capacity_problem(cfg, ray.cluster_resources())) is not None:
        print(f"dg-lsp serve: {problem}", file=sys.stderr)
        ray.shutdown()
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a service manager's stop shuts Serve down as Ctrl-C does
    try:
        serve.start(http_options={"host": args.serve_host, "port": args.serve_port})
        print(f"dg-lsp serve: deploying {cfg.replicas} replica(s) on {cfg.device}; each loads "
              f"{cfg.model or 'the embedded model'} (progress in the replica logs, by default "
              f"/tmp/ray/session_latest/logs/serve/) ...", file=sys.stderr)
        serve.run(build(cfg), name="dg-lsp", route_prefix="/")
        auth = "bearer token required" if token else "no token"
        print(f"dg-lsp serve: ready at http://{args.serve_host}:{args.serve_port}/v1/infill ({auth}; "
              f"Ctrl-C stops)", file=sys.stderr)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("dg-lsp serve: shutting down", file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()
    return 0


def _capacity_problem(cfg, resources: dict) -> str | None:
    """Why a local cluster cannot place every replica (Serve would wait for resources forever)."""
    if cfg.device == "cuda":
        need, have, what = cfg.replicas, resources.get("GPU", 0), "GPU"
    else:
        need, have, what = cfg.replicas * cfg.threads, resources.get("CPU", 0), "CPU"
    if need > have:
        return (f"{cfg.replicas} replica(s) need {need} {what}(s) but this machine has {int(have)}: "
                f"lower --replicas{'' if what == 'GPU' else ' or --threads'}")
    return None


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
