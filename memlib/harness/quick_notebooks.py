"""Write the notebooks with their quick parameters injected (papermill's parameterization, no execution), for
``make test`` to run through nbval: a cell that raises fails the test run with that cell shown.

Usage: ``python -m memlib.harness.quick_notebooks OUT_DIR``.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..paths import repo_root


def write_quick_notebooks(out_dir: str | Path) -> list[Path]:
    import nbformat
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    from .notebooks import QUICK_PARAMS
    from .reproduce import notebooks

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for nb_path in notebooks(repo_root()):
        nb = parameterize_notebook(load_notebook_node(str(nb_path)), QUICK_PARAMS.get(nb_path.stem, {}))
        target = out_dir / nb_path.name
        nbformat.write(nb, target)
        written.append(target)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m memlib.harness.quick_notebooks OUT_DIR")
    for path in write_quick_notebooks(sys.argv[1]):
        print("wrote", path)
