"""``memlib`` command line: ``memlib results`` (README table from metrics), ``memlib reproduce``."""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="memlib")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("results", help="regenerate the README's results table from figures/*/metrics.json")
    rep = sub.add_parser("reproduce", help="execute the notebooks (see memlib.reproduce)")
    rep.add_argument("args", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    if a.cmd == "results":
        from .report import results_table, update_readme

        changed = update_readme()
        print(results_table())
        print("README.md updated" if changed else "README.md already up to date")
        return 0
    from .reproduce import main as reproduce_main
    return reproduce_main(a.args)


if __name__ == "__main__":
    sys.exit(main())
