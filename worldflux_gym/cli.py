"""The ``worldflux-gym`` command. Each subcommand is one ``add_parser`` block and one handler.

Handlers import their area lazily so that ``worldflux-gym --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from worldflux_gym import __version__
from worldflux_gym.core.errors import WorldFluxError


def _catalog(args: argparse.Namespace) -> int:
    from worldflux_gym.core.registry import catalog

    rows = [("model", "maturity", "parameters", "description")]
    rows += [(e.name, e.maturity, f"{e.parameters:,}", e.description) for e in catalog()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="worldflux-gym",
        description="Learned world models as Gymnasium dream environments: collect, fit, dream, audit.",
    )
    parser.add_argument("--version", action="version", version=f"worldflux-gym {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = commands.add_parser("catalog", help="list every world-model family:preset with its size")
    p.set_defaults(handler=_catalog)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return int(args.handler(args) or 0)
    except WorldFluxError as err:
        print(f"worldflux-gym {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
