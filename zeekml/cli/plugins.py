"""``zeekml plugins``: list the installed sources, scorers and sinks, built-in or not.

Reads entry point metadata only (nothing is imported), so a broken plugin still
shows up here with the module it would load from.
"""

from __future__ import annotations

import argparse
import json
import sys

from zeekml import plugins

HELP = "list installed sources, scorers and sinks (entry point plugins) with their module"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plugins",
        help=HELP,
        description=(
            "List the sources, scorers and sinks zeekml can use: its built-ins and any "
            "package that registers entry points in the groups zeekml.sources, "
            "zeekml.scorers or zeekml.sinks. A sink NAME is used as --sink NAME:TARGET; "
            "a scorer NAME is a model card kind."
        ),
    )
    p.add_argument("--kind", choices=tuple(plugins.GROUPS), action="append",
                   help="only this kind (repeatable; default all)")
    p.add_argument("--json", action="store_true", help="one JSON object per plugin")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = plugins.as_rows(args.kind or tuple(plugins.GROUPS))
    out = sys.stdout
    if args.json:
        for row in rows:
            out.write(json.dumps(row, sort_keys=True) + "\n")
        return 0
    table: list[tuple[str, str, str, str]] = [("KIND", "NAME", "MODULE:OBJECT", "PACKAGE")]
    for r in rows:
        origin = f"{r['distribution']} {r['version']}"
        if r["builtin"] == "yes":
            origin += " (built-in)"
        if r["active"] != "yes":
            origin += " (ignored: name taken by a built-in)"
        table.append((r["kind"], r["name"], r["value"], origin))
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    for line in table:
        out.write("  ".join(c.ljust(w) for c, w in zip(line[:3], widths, strict=True))
                  + "  " + line[3] + "\n")
    return 0
