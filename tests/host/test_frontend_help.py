"""The nodes' help pages as users open them: ComfyUI's real web frontend in headless Chromium.

A pack node is put on the canvas and selected, and the selection toolbox's info button opens the node's help in
the node library's side panel (what `nodeHelpStore.openHelp` shows): the frontend fetches
/extensions/comfyui-svd-exact/docs/<NodeId>/<locale>.md, falls back to <NodeId>.md, and renders the Markdown. The
rendered page must show the file's heading, an input of the node, the graph's code block and the README links;
with the language set to Chinese (setting Comfy.Locale "zh") the Chinese page. Needs a ComfyUI checkout, Debian's
chromium and pip's playwright; skips with one line without them.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import hostenv

frontend, CHROMIUM, playwright_api = hostenv.browser_or_skip()

pytestmark = [pytest.mark.host, pytest.mark.browser]
PACK = "comfyui-svd-exact"
NODE = "StableVideoSampler"
DOCS = hostenv.REPO / "web" / "docs"


@pytest.fixture(scope="module")
def browser(server: Any) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        b = frontend.launch(p, CHROMIUM)
        yield b
        b.close()


def set_locale(server: Any, locale: str) -> None:
    """The user's language setting, stored by the server (what the settings dialog writes)."""
    code, _ = server.request("/settings/Comfy.Locale", locale)
    assert code == 200


def open_node_help(page: Any, node_id: str) -> tuple[Any, dict[str, int]]:
    """Put `node_id` on an empty canvas, click its title, click the selection toolbox's info button; returns the
    rendered help page and the status of every help file the frontend fetched."""
    fetched: dict[str, int] = {}
    page.on("response", lambda r: fetched.__setitem__(r.url.split(f"/extensions/{PACK}/", 1)[1], r.status)
            if f"/extensions/{PACK}/docs/" in r.url else None)
    page.evaluate("() => window.app.graph.clear()")
    page.evaluate("""(type) => {
        const node = LiteGraph.createNode(type);
        node.pos = [100, 100];
        window.app.graph.add(node);
    }""", node_id)
    frontend.command(page, "Comfy.Canvas.FitView")
    page.wait_for_timeout(500)
    title = page.evaluate("""() => {
        const c = window.app.canvas, n = window.app.graph._nodes[0], r = c.canvas.getBoundingClientRect();
        const s = c.ds.scale, [ox, oy] = c.ds.offset;
        const x = n.pos[0] + n.size[0] / 2, y = n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2;
        return {x: r.left + (x + ox) * s, y: r.top + (y + oy) * s};
    }""")
    for _ in range(3):  # a click that lands while the canvas still moves selects nothing: click again
        page.mouse.click(title["x"], title["y"])
        if page.evaluate("() => window.app.canvas.selectedItems.size") == 1:
            break
        page.wait_for_timeout(500)
    info = page.locator('button[data-testid="info-button"]')
    info.wait_for(state="visible", timeout=30000)
    info.click()
    help_page = page.locator(".node-help-content .markdown-content")
    help_page.locator("h1").wait_for(timeout=30000)
    return help_page, fetched


def heading(path: Any) -> str:
    return str(path.read_text(encoding="utf-8").splitlines()[0][2:])


def test_the_english_help_page_opens_and_renders(server: Any, browser: Any) -> None:
    set_locale(server, "en")
    page = frontend.open_app(browser, server.url)
    try:
        help_page, fetched = open_node_help(page, NODE)
        assert help_page.locator("h1").inner_text().strip() == heading(DOCS / f"{NODE}.md")
        # English has no page of its own: the frontend asks for en.md, then takes the fallback
        assert fetched == {f"docs/{NODE}/en.md": 404, f"docs/{NODE}.md": 200}, fetched
        assert help_page.locator("h2", has_text="Inputs").count() == 1
        assert help_page.locator("li code", has_text="min_cfg").count() >= 1  # an input of the node, listed
        assert "[Sampler]" in help_page.locator("pre code").first.inner_text()  # the graph, a code block
        links = help_page.locator("a").evaluate_all("(links) => links.map(a => a.href)")
        assert links and all("#" in h and h.startswith("https://github.com/") for h in links), links
    finally:
        page.close()


def test_the_chinese_help_page_opens_for_the_chinese_ui(server: Any, browser: Any) -> None:
    set_locale(server, "zh")
    page = frontend.open_app(browser, server.url)
    try:
        assert page.evaluate("() => window.app.extensionManager.setting.get('Comfy.Locale')") == "zh"
        help_page, fetched = open_node_help(page, NODE)
        assert help_page.locator("h1").inner_text().strip() == heading(DOCS / NODE / "zh.md")
        assert fetched == {f"docs/{NODE}/zh.md": 200}, fetched
        assert help_page.locator("h2", has_text="显存与速度").count() == 1
        assert help_page.locator("li code", has_text="min_cfg").count() >= 1
    finally:
        page.close()
        set_locale(server, "en")
