"""Fixtures of the host tests: tiny checkpoints and inputs (once per session), an in-process ComfyUI
(once per session) and a ComfyUI server on 127.0.0.1 (once per module that asks for it)."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostenv  # noqa: E402

if not hostenv.HAVE_COMFY:
    # test_inprocess.py skips with hostenv.SKIP_REASON: one line in pytest's summary for the suite
    collect_ignore_glob = ["test_server.py"]


@pytest.fixture(scope="session")
def host_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("comfy_host")


@pytest.fixture(scope="session")
def comfy_nodes(host_root: Path) -> Any:
    """ComfyUI imported into this process with the pack loaded; returns ComfyUI's `nodes` module."""
    return hostenv.start_inprocess_host(host_root)


@pytest.fixture(scope="session")
def assets(comfy_nodes: Any, host_root: Path) -> Path:
    """The models folder (tiny SVD, tiny SV3D_p, tiny SD1.5) and example inputs, shared by both hosts."""
    ckpts = host_root / "checkpoints"
    hostenv.write_svd_checkpoint(ckpts / hostenv.SVD_CKPT)
    hostenv.write_family_checkpoint(ckpts / hostenv.SV3D_P_CKPT, "sv3d_p")
    hostenv.write_sd15_checkpoint(ckpts / hostenv.SD_CKPT)
    hostenv.write_lcm_unet(host_root / "diffusion_models" / hostenv.LCM_UNET)
    hostenv.write_inputs(host_root / "input")
    return ckpts


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: Path, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.base, self.port, self.proc, self.log = base, port, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def request(self, path: str, data: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        body = None if data is None else json.dumps(data).encode()
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw.strip() else None)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return e.code, json.loads(raw)
            except ValueError:
                return e.code, raw.decode(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None and self.request("/system_stats")[0] == 200

    def queue(self, prompt: dict[str, Any]) -> tuple[int, Any]:
        return self.request("/prompt", {"prompt": prompt, "client_id": "svd-host-tests"})

    def wait(self, prompt_id: str, timeout: float = 240.0) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            code, hist = self.request(f"/history/{prompt_id}")
            if code == 200 and prompt_id in hist and hist[prompt_id].get("status", {}).get("completed") is not None:
                entry = hist[prompt_id]
                if entry["status"].get("status_str") in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s; log: {self.log}")


@pytest.fixture(scope="module")
def server(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`python main.py --cpu` on a free loopback port with a private base directory; the pack is
    linked into its custom_nodes, the tiny checkpoints into its models/checkpoints."""
    base = tmp_path_factory.mktemp("comfy_server")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "comfyui-svd-exact").symlink_to(hostenv.REPO, target_is_directory=True)
    (base / "models" / "checkpoints").mkdir(parents=True)
    for f in assets.iterdir():
        (base / "models" / "checkpoints" / f.name).symlink_to(f)
    (base / "models" / "diffusion_models").mkdir(parents=True)
    unet = assets.parent / "diffusion_models" / hostenv.LCM_UNET
    (base / "models" / "diffusion_models" / unet.name).symlink_to(unet)
    hostenv.write_inputs(base / "input")
    port = _free_port()
    log = base / "server.log"
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(base), "--database-url", "sqlite:///:memory:", "--disable-api-nodes", "--preview-method", "latent2rgb"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=str(hostenv.COMFY), stdout=out, stderr=subprocess.STDOUT, env=env)
    srv = Server(base, port, proc, log)
    try:
        end = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if srv.request("/system_stats", timeout=2)[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            if time.monotonic() > end:
                raise TimeoutError(f"ComfyUI did not start in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(base / "output", ignore_errors=True)
