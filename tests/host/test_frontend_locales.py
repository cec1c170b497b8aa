"""The translations as a user sees them: ComfyUI's real web frontend in headless Chromium, its language set to
Chinese (the setting Comfy.Locale, saved through the server's settings API before the page opens).

Every node of the pack shows its Chinese title, widget labels, input and output slot names (locales/zh), its
library folder is translated, and hovering a widget or the title shows the Chinese tooltip or description. Needs a
ComfyUI checkout, Debian's chromium and pip's playwright; skips with one line without them.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import hostenv

frontend, CHROMIUM, playwright_api = hostenv.browser_or_skip()

pytestmark = [pytest.mark.host, pytest.mark.browser]
LOCALE = "zh"
ZH = json.loads((hostenv.REPO / "locales" / LOCALE / "nodeDefs.json").read_text(encoding="utf-8"))
ZH_MAIN = json.loads((hostenv.REPO / "locales" / LOCALE / "main.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def page(server: Any) -> Iterator[Any]:
    code, _ = server.request("/settings/Comfy.Locale", LOCALE)
    assert code == 200, "the server did not save the language setting"
    with hostenv.open_browser(server.url) as page:
        assert page.evaluate("() => window.app.extensionManager.setting.get('Comfy.Locale')") == LOCALE
        page.evaluate("() => window.app.graph.clear()")
        yield page


def add_node(page: Any, node_type: str) -> dict[str, Any]:
    """A new node of `node_type` at (200, 200) on an empty graph, as the frontend labels it."""
    return page.evaluate("""(type) => {
        app.graph.clear();
        const n = LiteGraph.createNode(type);
        n.pos = [200, 200];
        app.graph.add(n);
        app.canvas.ds.offset = [0, 0]; app.canvas.ds.scale = 1;
        app.canvas.setDirty(true, true); app.canvas.draw(true, true);
        return {title: n.title, category: LiteGraph.registered_node_types[type].category,
                widgets: (n.widgets || []).map(w => [w.name, w.label ?? null]),
                inputs: (n.inputs || []).map(s => [s.name, s.localized_name ?? null]),
                outputs: (n.outputs || []).map(s => [s.name, s.localized_name ?? null])};
    }""", node_type)


@pytest.mark.parametrize("node_type", sorted(ZH))
def test_node_shows_its_chinese_names(page: Any, node_type: str) -> None:
    want = ZH[node_type]
    node = add_node(page, node_type)
    assert node["title"] == want["display_name"]
    assert node["category"].endswith("/" + ZH_MAIN["nodeCategories"]["stable_video_diffusion"]), node["category"]
    names = {k: v["name"] for k, v in want.get("inputs", {}).items()}
    # the frontend's own control_after_generate widget (after a seed) is translated by the frontend itself
    ours = [(name, label) for name, label in node["widgets"] if name != "control_after_generate"]
    for name, label in ours:
        assert label == names[name], f"{node_type}: widget {name} labelled {label!r}"
    for name, shown in node["inputs"]:
        assert shown == names[name], f"{node_type}: input slot {name} shows {shown!r}"
    for index, (name, shown) in enumerate(node["outputs"]):
        assert shown == want["outputs"][str(index)]["name"], f"{node_type}: output {index} ({name}) shows {shown!r}"


def hover_tooltip(page: Any, x: float, y: float) -> str:
    """The frontend's node tooltip after the mouse rests at canvas point (x, y)."""
    box = page.evaluate("() => { const r = app.canvas.canvas.getBoundingClientRect(); return [r.left, r.top]; }")
    page.mouse.move(box[0] + x - 30, box[1] + y)
    page.mouse.move(box[0] + x, box[1] + y, steps=5)
    page.wait_for_timeout(100)  # a move hides the previous tooltip; the next one comes after TooltipDelay
    tip = page.locator(".node-tooltip")
    tip.wait_for(state="visible", timeout=10000)
    return str(tip.inner_text()).strip()


def test_hovering_shows_the_chinese_tooltip_and_description(page: Any) -> None:
    add_node(page, "StableVideoSampler")
    widget = page.evaluate("""() => { const n = app.graph._nodes[0]; const w = n.widgets.find(w => w.name === 'steps');
        return {x: n.pos[0] + n.size[0] / 2, y: n.pos[1] + w.y + LiteGraph.NODE_WIDGET_HEIGHT / 2,
                title_y: n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2}; }""")
    assert hover_tooltip(page, widget["x"], widget["y"]) == ZH["StableVideoSampler"]["inputs"]["steps"]["tooltip"]
    assert hover_tooltip(page, widget["x"], widget["title_y"]) == ZH["StableVideoSampler"]["description"]
