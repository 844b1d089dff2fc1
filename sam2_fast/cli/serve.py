"""``sam2-fast serve``: the click-to-segment web app (needs the ``serve`` extra).

See ``sam2-fast serve --help`` and the README's "Web app" section.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from sam2_fast.cli._args import DEFAULT_MODEL, image_size_arg, positive_float, positive_int
from sam2_fast.cli._shared import video_predictor


def is_loopback(host: str) -> bool:
    """``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from sam2_fast.serve import ServeLimits, create_app
    except ImportError as exc:
        raise SystemExit(
            f"error: sam2-fast serve needs FastAPI and uvicorn ({exc}): pip install 'sam2-fast[serve]'"
        ) from None
    if not is_loopback(args.host) and args.token is None:
        print(
            f"WARNING: --host {args.host} accepts connections from other machines and there is NO "
            "authentication: anyone who can reach this port can upload files and use the model. "
            "Pass --token SECRET to require 'Authorization: Bearer SECRET' on every API call.",
            file=sys.stderr,
        )
    limits = ServeLimits(
        max_upload_mb=args.max_upload_mb,
        max_frames=args.max_frames,
        max_sessions=args.max_sessions,
        max_memory_mb=args.max_memory_mb,
        session_ttl_s=args.session_ttl,
    )
    model = video_predictor(args.model, args.device, args.random_weights, args.image_size)
    app = create_app(model, limits, token=args.token, model_name=args.model, random_weights=args.random_weights)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"sam2-fast serve: {args.model} on {model.device}; open http://{shown}:{args.port}/ "
          f"(API docs at /docs)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning" if args.quiet else "info")
    return 0


def add_parser(sub) -> None:
    """The ``serve`` subcommand of the ``sam2-fast`` parser."""
    p = sub.add_parser("serve", help="a click-to-segment web app for images and videos (needs sam2-fast[serve])")
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help=f"zoo name, Hub id or checkpoint path (default {DEFAULT_MODEL})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: auto)")
    p.add_argument("--image-size", type=image_size_arg, metavar="PIXELS",
                   help="model input size, a multiple of 32 (default: the variant's, 1024); smaller "
                        "is faster and coarser")
    p.add_argument("--token", default=None, metavar="SECRET",
                   help="require 'Authorization: Bearer SECRET' on every API call")
    p.add_argument("--max-upload-mb", type=positive_float, default=200.0, metavar="MB",
                   help="largest upload accepted (default 200)")
    p.add_argument("--max-frames", type=positive_int, default=300, metavar="N",
                   help="most frames a video may have (default 300)")
    p.add_argument("--max-sessions", type=positive_int, default=16, metavar="N",
                   help="images and videos kept at once; the least recently used go first (default 16)")
    p.add_argument("--max-memory-mb", type=positive_float, default=4096.0, metavar="MB",
                   help="memory the sessions' embeddings and tracking state may hold (default 4096)")
    p.add_argument("--session-ttl", type=positive_float, default=1800.0, metavar="SECONDS",
                   help="a session unused this long is deleted (default 1800)")
    p.add_argument("--quiet", action="store_true", help="log only warnings (no request log)")
    p.add_argument("--random-weights", action="store_true",
                   help="build the --model variant with random weights instead of loading a checkpoint "
                        "(meaningless masks; for trying out the app)")
    p.set_defaults(func=cmd_serve)
