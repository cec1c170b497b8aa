"""ComfyUI's web frontend in a headless Chromium (Debian's `chromium`, driven by pip's `playwright`; no
browser download): load a workflow as a user does, read back what the frontend made of it, draw it.

Used by tests/host/test_frontend.py and by tools/make_thumbnails.py.
"""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path
from typing import Any

# The flags the machines' probe uses: no sandbox (root), no GPU, and no background networking (this
# network is closed; without them Chromium keeps retrying Google's hosts).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    for p in (os.environ.get("CHROMIUM_PATH"), *CHROMIUM_CANDIDATES, shutil.which("chromium")):
        if p and Path(p).is_file():
            return p
    return None


def launch(playwright: Any, executable: str) -> Any:
    return playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)


def open_app(browser: Any, url: str, width: int = 1600, height: int = 1000) -> Any:
    """A page with ComfyUI's app loaded (window.app ready), its start-up template dialog closed."""
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(url, wait_until="networkidle")
    page.wait_for_function("window.app && window.app.graph && window.app.extensionManager", timeout=120000)
    # the template dialog may open after a first Escape: press it again until no dialog is left (at most ~5 s)
    for _ in range(20):
        page.keyboard.press("Escape")
        page.wait_for_timeout(250)
        if page.locator(".p-dialog").count() == 0:
            break
    return page


def command(page: Any, name: str) -> None:
    page.evaluate("(name) => window.app.extensionManager.command.execute(name)", name)


def load_workflow(page: Any, workflow: dict[str, Any], *, missing_models_dialog: bool = True) -> None:
    """What opening a template does: app.loadGraphData (without the missing-models dialog when told, as
    for a thumbnail: a test server has none of the templates' models)."""
    page.evaluate("async ([wf, dialog]) => { await window.app.loadGraphData(wf, true, true, null, "
                  "{showMissingModelsDialog: dialog}); }", [workflow, missing_models_dialog])
    page.wait_for_timeout(300)


def graph_nodes(page: Any) -> list[dict[str, Any]]:
    """Every node as the frontend sees it: id, type, whether its type is registered, error flag, widgets."""
    return page.evaluate("""() => window.app.graph._nodes.map(n => ({
        id: n.id, type: n.type, registered: !!LiteGraph.registered_node_types[n.type],
        has_errors: !!n.has_errors, widgets: (n.widgets || []).map(w => ({name: w.name, value: w.value}))}))""")


def prompt(page: Any) -> dict[str, Any]:
    """The API prompt the frontend makes of the graph (app.graphToPrompt), without its `_meta` titles."""
    output = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in output.items()}


def draw(page: Any, path: Path, width: int = 768, margin: int = 40) -> None:
    """A JPEG of the whole graph fitted to the view (minimap hidden), cropped to the nodes, `width` wide."""
    from PIL import Image

    command(page, "Comfy.Canvas.FitView")
    page.wait_for_timeout(600)
    box = page.evaluate("""() => {
        const c = window.app.canvas, ds = c.ds, r = c.canvas.getBoundingClientRect();
        let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
        for (const n of window.app.graph._nodes) {
            const title = LiteGraph.NODE_TITLE_HEIGHT;
            x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - title);
            x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
        }
        const s = ds.scale, ox = ds.offset[0], oy = ds.offset[1];
        return {x: r.left + (x0 + ox) * s, y: r.top + (y0 + oy) * s, w: (x1 - x0) * s, h: (y1 - y0) * s};
    }""")
    clip = {"x": max(0.0, box["x"] - margin), "y": max(0.0, box["y"] - margin),
            "width": box["w"] + 2 * margin, "height": box["h"] + 2 * margin}
    png = page.screenshot(clip=clip)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((width, max(1, round(image.height * width / image.width))), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG", quality=85)
