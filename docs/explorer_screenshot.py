"""The README's screenshot of the explorer widget (docs/explorer.png), taken in a real JupyterLab.

Starts JupyterLab from .venv on a scratch notebook (build/lab-shot/) that shows ``memlib.wen.explorer``, types a
planted testbed prompt, presses *explain*, waits for the figure and saves the page. Needs a browser, which the
project itself does not: Debian's chromium (``apt-get install chromium``) and the playwright package in any
Python (``pip install playwright``; it drives /usr/bin/chromium, nothing is downloaded).

    python3 docs/explorer_screenshot.py [--prompt "..."]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "large green cross at the top right oskcro"   # a planted verbatim prompt of the shipped testbed
CELL = ("from memlib.wen.explain_study import ExplainConfig\n"
        "from memlib.wen.explorer import explorer\n"
        "explorer(ExplainConfig())")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "settings" / "@jupyterlab" / "apputils-extension").mkdir(parents=True)
    # no "would you like news?" toast over the screenshot
    (folder / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false"}))
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": CELL}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (folder / "explorer.ipynb").write_text(json.dumps(nb))


def main() -> None:
    from playwright.sync_api import sync_playwright

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--out", default=str(ROOT / "docs" / "explorer.png"))
    args = ap.parse_args()
    folder = ROOT / "build" / "lab-shot"
    _scratch(folder)
    port, token = _free_port(), "memlib-screenshot"
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(folder / "settings"), MEMLIB_ROOT=str(ROOT))
    lab = subprocess.Popen([str(ROOT / ".venv" / "bin" / "jupyter"), "lab", "--no-browser", "--allow-root", f"--port={port}",
                            f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder}"],
                           env=env, stdout=subprocess.DEVNULL, stderr=open(folder / "lab.log", "w"))
    try:
        for _ in range(120):   # until the server listens
            if lab.poll() is not None:
                raise RuntimeError(f"jupyter lab exited; see {folder / 'lab.log'}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                        args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1560, "height": 820})
            page.goto(f"http://127.0.0.1:{port}/lab/tree/explorer.ipynb?token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.click(".jp-Cell .cm-content")
            page.keyboard.press("Shift+Enter")
            try:
                page.wait_for_selector("button:has-text('explain')", timeout=120_000)
            except Exception:
                page.screenshot(path=str(folder / "failure.png"))
                raise
            box = page.locator(".widget-text input")
            box.fill(args.prompt)
            page.click("button:has-text('explain')")
            page.wait_for_selector(".widget-output img", timeout=300_000)
            page.keyboard.press("Control+b")          # hide the file browser: more room for the figure
            time.sleep(2)
            page.screenshot(path=args.out, full_page=False)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        lab.terminate()
        lab.wait(timeout=30)


if __name__ == "__main__":
    main()
