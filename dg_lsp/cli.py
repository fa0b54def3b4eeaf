"""`dg-lsp` command line: serve LSP (the default), or run one of the tools beside it.

Subcommand modules are imported only when chosen, so `dg-lsp --help` and the server start fast and the
server never imports torch until the engine backend loads a model.
"""

from __future__ import annotations

import argparse
import sys

MODEL_HELP = ("checkpoint directory, Hugging Face repo id org/name[@revision] (from the local cache: see "
              "`dg-lsp pull`), or cache folder models--org--name (default: the embedded model)")
FAMILY_HELP = "model family (dream, open-dcoder, llada, dg) when config.json does not tell"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dg-lsp", description="Diffusion-LM code completion language server.")
    parser.add_argument("--tcp", action="store_true", help="serve over TCP instead of stdio")
    parser.add_argument("--host", default="127.0.0.1", help="TCP host (default 127.0.0.1; loopback unless told)")
    parser.add_argument("--port", type=int, default=2087, help="TCP port (default 2087)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow --host to be an address other machines can reach (prints a warning)")
    parser.add_argument("--token-file", default=None,
                        help="TCP clients must send this file's text as initializationOptions.token "
                             "(default: $DG_LSP_TOKEN if set)")
    parser.add_argument("--max-message-bytes", type=_positive, default=64 * 1024 * 1024,
                        help="larger messages are skipped and answered with an error (default 64 MiB)")
    parser.add_argument("--max-header-bytes", type=_positive, default=8192,
                        help="longer header lines are skipped (default 8192)")
    parser.add_argument("--log-file", default=None, help="write server logs to this file")
    sub = parser.add_subparsers(dest="command")

    infill = sub.add_parser("infill", help="infill a file at FILE:LINE:COL (1-based) and print the middle")
    infill.add_argument("location", help="FILE:LINE:COL, 1-based line and column")
    _add_model_args(infill)
    infill.add_argument("--steps", type=int, default=None,
                        help="denoising steps (DiffusionGemma: at most, per canvas)")
    infill.add_argument("--canvas", type=int, default=None, help="canvas length in tokens")
    infill.add_argument("--seed", type=int, default=0, help="seed for sampling when temperature > 0")
    infill.add_argument("--temperature", type=float, default=0.0)
    infill.add_argument("--show-steps", action="store_true", help="print the canvas after every denoising step")
    infill.add_argument("--block-length", type=int, default=0, help="semi-autoregressive blocks (0: one block)")
    gemma = infill.add_argument_group("DiffusionGemma's sampler (default: the checkpoint's generation config)")
    gemma.add_argument("--entropy-bound", type=float, default=None)
    gemma.add_argument("--temperature-min", type=float, default=None)
    gemma.add_argument("--temperature-max", type=float, default=None)
    gemma.add_argument("--stability", type=int, default=None, help="stability threshold (steps)")
    gemma.add_argument("--confidence", type=float, default=None, help="confidence threshold (mean entropy)")

    demo = sub.add_parser("demo", help="run the server on a sample file with a real LSP client, with timings")
    demo.add_argument("--model", default=None, help=MODEL_HELP)
    demo.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    demo.add_argument("--family", default=None, help=FAMILY_HELP)

    doctor = sub.add_parser("doctor", help="print device, model, kernel availability and time a test infill")
    _add_model_args(doctor)

    serve = sub.add_parser("serve", help="serve the HTTP infill API with Ray Serve (docs/serving.md)")
    serve.add_argument("--model", default=None, help=MODEL_HELP)
    # Ray places replicas by what they declare, so the device is said, not detected
    serve.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cpu, or cuda: one GPU per replica")
    serve.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: per device)")
    serve.add_argument("--family", default=None, help=FAMILY_HELP)
    serve.add_argument("--quantize", default=None, choices=["int8"], help="weight-only quantization")
    serve.add_argument("--replicas", type=int, default=1, help="engine replicas (cuda: one GPU each)")
    serve.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per CPU replica")
    serve.add_argument("--host", dest="serve_host", metavar="HOST", default="127.0.0.1",
                       help="HTTP host (default 127.0.0.1; loopback unless told)")
    serve.add_argument("--port", dest="serve_port", metavar="PORT", type=int, default=8000,
                       help="HTTP port (default 8000)")
    serve.add_argument("--allow-remote", dest="allow_remote_serve", action="store_true",
                       help="allow --host to be an address other machines can reach (prints a warning)")
    serve.add_argument("--token-file", dest="serve_token_file", metavar="FILE", default=None,
                       help="clients must send this file's text as a bearer token (default: $DG_LSP_TOKEN if set)")
    serve.add_argument("--max-body-bytes", type=_positive, default=1024 * 1024,
                       help="larger request bodies get 413 (default 1 MiB)")
    serve.add_argument("--max-batch-size", type=int, default=8, help="requests denoised together at most (1: off)")
    serve.add_argument("--batch-wait-ms", type=float, default=10.0,
                       help="how long a batch waits to fill (default 10 ms)")
    serve.add_argument("--ray-address", default=None, help="join this Ray cluster (default: start a local one)")

    pull = sub.add_parser("pull", help="download a checkpoint from the Hugging Face Hub into its cache")
    pull.add_argument("repo", help="org/name or org/name@revision (branch, tag or commit)")
    sub.add_parser("models", help="list the checkpoints in the Hugging Face cache and the embedded model")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of bytes, got {text!r}")
    return value


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help=MODEL_HELP)
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: per device)")
    p.add_argument("--family", default=None, help=FAMILY_HELP)
    p.add_argument("--quantize", default=None, choices=["int8"], help="weight-only quantization")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "infill":
        from dg_lsp.infill_cmd import run

        return run(args)
    if args.command == "demo":
        from dg_lsp.demo import main as demo

        return demo(args)
    if args.command == "doctor":
        from dg_lsp.doctor import run

        return run(args)
    if args.command == "serve":
        from dg_lsp.serving.serve_cmd import run

        return run(args)
    if args.command == "pull":
        from dg_lsp.models_cmd import pull

        return pull(args)
    if args.command == "models":
        from dg_lsp.models_cmd import models

        return models(args)
    from dg_lsp.server import serve

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
