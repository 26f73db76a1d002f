"""Command-line interface: ``nested-diffusion generate``, ``edit``, ``restore``, ``evaluate`` and ``serve`` (also
``python -m nested_diffusion``).

Start-up stays lazy: argparse only; torch and diffusers are imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys

from . import edit, evaluate, generate, restore, serve
from .options import CLIError, flag_names

__all__ = ["main", "build_parser", "CLIError"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nested-diffusion",
        description="Anytime image generation with nested diffusion (Elata et al., WACV 2024).")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate.add_parser(sub)
    edit.add_parser(sub)
    evaluate.add_parser(sub)
    restore.add_parser(sub)
    serve.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except CLIError as e:
        print(f"nested-diffusion {args.command}: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, TypeError) as e:  # library errors name arguments: say the command's flags
        print(f"nested-diffusion {args.command}: error: {flag_names(str(e), getattr(args, 'flags', {}))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
