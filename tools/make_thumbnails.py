"""Write the thumbnail of every example workflow (`example_workflows/<name>.jpg`), as ComfyUI's Template
Browser shows it: the workflow drawn by ComfyUI's own frontend, fitted to the view. Rerun it whenever a
workflow changes (tests/host/test_frontend.py checks that every template has its thumbnail).

    python tools/make_thumbnails.py [--comfyui ~/ComfyUI] [NAME ...]

It starts ComfyUI on 127.0.0.1 (CPU, a private base directory with this pack in custom_nodes) and drives
Debian's Chromium through playwright (tools/frontend.py).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import frontend  # noqa: E402

log = logging.getLogger("thumbnails")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(comfyui: Path, base: Path) -> tuple[subprocess.Popen[bytes], str]:
    (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / "comfyui-svd-exact"
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    port = _free_port()
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(base), "--database-url", "sqlite:///:memory:", "--disable-api-nodes"]
    proc = subprocess.Popen(cmd, cwd=str(comfyui), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/system_stats", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"ComfyUI at {comfyui} did not start in 120 s")


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comfyui", type=Path, default=Path(os.environ.get("COMFYUI_PATH", "~/ComfyUI")).expanduser())
    ap.add_argument("names", nargs="*")
    args = ap.parse_args()
    chromium = frontend.chromium_path()
    if chromium is None:
        raise SystemExit("no Chromium found (install Debian's `chromium`, or set CHROMIUM_PATH)")
    from playwright.sync_api import sync_playwright

    names = args.names or sorted(p.stem for p in (REPO / "example_workflows").glob("*.json") if p.stem != "index")
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(args.comfyui, Path(tmp))
        try:
            with sync_playwright() as p:
                browser = frontend.launch(p, chromium)
                page = frontend.open_app(browser, url, width=3000, height=1300)
                frontend.command(page, "Comfy.Canvas.ToggleMinimap")
                for name in names:
                    workflow = json.loads((REPO / "example_workflows" / f"{name}.json").read_text())
                    frontend.load_workflow(page, workflow, missing_models_dialog=False)
                    out = REPO / "example_workflows" / f"{name}.jpg"
                    frontend.draw(page, out)
                    log.info("wrote %s", out.relative_to(REPO))
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
