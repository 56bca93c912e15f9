"""``eercf serve DIR``: the search service and its page over one index."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EercfError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="serve an index over HTTP: JSON API and search page",
        description="Serve an index built by `eercf index`: a JSON API (searches batched as "
                    "they arrive, video files with HTTP Range, thumbnails, add/remove jobs with "
                    "a token) and a search page at /. API docs at /docs. Binds to 127.0.0.1 "
                    "unless told otherwise. See docs/service.md.")
    p.add_argument("index", metavar="DIR", help="index folder, or s3://bucket/prefix")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--token-file", type=Path, default=None,
                   help="file holding the bearer token that allows adding and removing videos "
                        "(without it the service is read-only)")
    p.add_argument("--media-root", type=Path, default=None,
                   help="serve and accept only video files inside this folder")
    p.add_argument("--no-hot-in-memory", action="store_true",
                   help="read a pq store's hot tier from disk per search instead of holding it "
                        "in memory (45 KB a video at ViT-B/32)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=run)


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as err:
        raise EercfError(f"cannot read --token-file {path}: {err.strerror or err}") from None
    if len(token) < 16:
        raise EercfError(f"the token in {path} is too short: use at least 16 characters "
                         "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return token


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ..serve import create_app

    if not 0 < args.port < 65536:
        raise EercfError(f"--port must be between 1 and 65535, got {args.port}")
    if args.media_root is not None and not args.media_root.is_dir():
        raise EercfError(f"--media-root {args.media_root} is not a folder")
    token = read_token(args.token_file) if args.token_file else None
    app = create_app(args.index, token=token, media_root=args.media_root,
                     hot_in_memory=not args.no_hot_in_memory)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"eercf serve: listening on {args.host}: reachable from other machines"
              + ("" if token else " (read-only: no --token-file)"), file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                proxy_headers=True, forwarded_allow_ips="127.0.0.1")
    return 0
