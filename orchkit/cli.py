"""The ``orchkit`` command line: validate, export, simulate, run, demo."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Sequence

from ._errors import OrchkitError
from ._plan import Plan, SeedCompatWarning


def _validate(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    chain = plan.chain()
    steps = sum(len(p.steps) for p in chain)
    print(f"{args.plan}: plan '{plan.id}' is valid ({steps} steps in {len(chain)} plan(s))")
    return 0


def _export(args: argparse.Namespace) -> int:
    plan = Plan.load(args.plan)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SeedCompatWarning)
        data = plan.to_dict(compat=args.compat)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    text = json.dumps(data, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check a plan file; exit 2 with the reason if invalid")
    p.add_argument("plan")
    p.set_defaults(func=_validate)
    p = sub.add_parser("export", help="write a plan back as JSON (optionally for the seed)")
    p.add_argument("plan")
    p.add_argument("--compat", choices=["seed"], default=None)
    p.add_argument("-o", "--output", help="file to write (default: stdout)")
    p.set_defaults(func=_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (2 for invalid input)."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except OrchkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
