"""The ``eercf`` command. Each subcommand lives in ``eercf.commands.<name>`` and exposes
``register(subparsers)``; this module only discovers them and turns user errors into one line."""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__, commands
from .errors import EercfError

# An OpenMP thread waiting at a barrier spins before it sleeps (libgomp: 300,000 spins). On
# cores shared with another job a spinning thread takes the core its partner needs: a tiny
# training step went from 0.9 s alone to 2.9 s beside a spinning process and 3.4-7.5 s beside
# a second run, where a short spin keeps the speed alone and shares in proportion (1.9x and
# 1.8x; benchmarks/shared_cores.py). Set before torch loads (every command imports it later);
# a user's own OpenMP wait settings win.
if not any(k in os.environ for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")):
    os.environ["GOMP_SPINCOUNT"] = "3000"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eercf", description="Efficient and effective text-to-video retrieval (EERCF).")
    parser.add_argument("--version", action="version", version=f"eercf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):  # helpers shared by commands
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EercfError as err:
        print(f"eercf {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"eercf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
