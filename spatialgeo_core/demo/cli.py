"""`spatialgeo demo-train`: the whole demo training (see spatialgeo_core.demo.reproduce)."""
from __future__ import annotations


def add_parsers(subparsers) -> None:
    """Add `demo-train` to the `spatialgeo` command's subparsers."""
    from spatialgeo_core.demo.reproduce import __doc__ as doc
    from spatialgeo_core.demo.reproduce import add_arguments

    p = subparsers.add_parser(
        "demo-train", help="train the demo model from scratch on the synthetic world (CPU)",
        description=doc.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=cmd_demo_train)


def cmd_demo_train(args) -> int:
    import sys

    from spatialgeo_core.demo.reproduce import run_and_report

    args.argv = sys.argv[2:]
    return run_and_report(args)
