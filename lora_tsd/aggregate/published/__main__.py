"""python -m lora_tsd.aggregate.published COMMAND

  publish GRID_DIR OUT          write GRID_DIR's published reference (e.g. docs/reference/default/leaderboard.json)
  compare [GRID_DIR] [--reference PATH] [--out DIR]
                                compare a finished grid (default results/default) with the published file
                                (default docs/reference/<grid name>/leaderboard.json); write comparison.md and
                                comparison.json to DIR (default GRID_DIR); print the verdict line and where the
                                provenance differs
  readme [--check] [--reference PATH] [--readme PATH]
                                rewrite README.md's published-tables block from the published file (default
                                docs/reference/default/leaderboard.json); --check: only say whether it is current

Exit status: 0 done (compare: no cell outside this run's 95% CI or missing; readme --check: the
block is current); 1 compare found a cell outside or missing, or readme --check a stale block;
2 a file or folder is missing (one line naming it), or the README has no block."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import compare, readme, stamp


def _publish(args) -> int:
    content = stamp.publish(args.grid, args.out)
    print(f"wrote {args.out}: {len(content['records'])} record entries, {len(content['summary'])} cells")
    return 0


def _compare(args) -> int:
    grid = Path(args.grid)
    reference = args.reference or \
        f"docs/reference/{(stamp.board(grid).get('config') or {}).get('name', grid.name)}/leaderboard.json"
    result = compare.compare(grid, reference)
    out = Path(args.out or grid)
    compare.write(result, out / "comparison.md", out / "comparison.json")
    print("\n".join(compare.summary_lines(result)))
    print(f"wrote {out / 'comparison.md'} and {out / 'comparison.json'}")
    return 0 if result["ok"] else 1


def _readme(args) -> int:
    if args.check:
        current = readme.check(args.readme, args.reference)
        print(f"{args.readme}: the published tables are {'current' if current else 'stale'} "
              f"({'matches' if current else 'differs from'} {args.reference})")
        return 0 if current else 1
    changed = readme.update(args.readme, args.reference)
    print(f"{args.readme}: {'rewrote' if changed else 'already current:'} the published tables from {args.reference}")
    return 0


def main(argv: list[str] | None = None) -> int:
    head, tail = __doc__.rsplit("\n\n", 1)
    parser = argparse.ArgumentParser(prog="python -m lora_tsd.aggregate.published", description=head, epilog=tail,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="write a finished grid's published reference file")
    p.add_argument("grid", help="the grid's folder, e.g. results/default")
    p.add_argument("out", help="the file to write, e.g. docs/reference/default/leaderboard.json")
    c = sub.add_parser("compare", help="compare a finished grid with the published reference")
    c.add_argument("grid", nargs="?", default="results/default", help="the grid's folder (default: results/default)")
    c.add_argument("--reference", help="the published file (default: docs/reference/<grid name>/leaderboard.json)")
    c.add_argument("--out", help="where comparison.md and comparison.json go (default: the grid's folder)")
    r = sub.add_parser("readme", help="render the README's tables from the published file")
    r.add_argument("--check", action="store_true", help="exit 1 if the README's block is not what the file gives")
    r.add_argument("--reference", default=readme.REFERENCE, help=f"the published file (default: {readme.REFERENCE})")
    r.add_argument("--readme", default="README.md", help="the README to rewrite (default: README.md)")
    args = parser.parse_args(argv)
    try:
        return {"publish": _publish, "compare": _compare, "readme": _readme}[args.command](args)
    except stamp.Problem as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
