"""The example workflows as users open them: ComfyUI's real web frontend in headless Chromium.

Each template is loaded through the frontend (app.loadGraphData): no missing node type, no node flagged
with errors, every widget of the pack's nodes present; and the prompt the frontend makes of it
(app.graphToPrompt) equals its API twin. The Template Browser lists the templates under the pack's name,
each with its thumbnail. Needs a ComfyUI checkout, Debian's chromium and pip's playwright; skips with one
line without them.
"""
from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import hostenv

frontend, CHROMIUM, playwright_api = hostenv.browser_or_skip()

pytestmark = [pytest.mark.host, pytest.mark.browser]
PACK = "comfyui-svd-exact"


@pytest.fixture(scope="module")
def page(server: Any) -> Iterator[Any]:
    with hostenv.open_browser(server.url) as page:
        yield page


@pytest.fixture(scope="module")
def object_info(server: Any) -> dict[str, Any]:
    code, info = server.request("/object_info")
    assert code == 200
    return info


@pytest.mark.parametrize("name", hostenv.WORKFLOW_NAMES)
def test_template_loads_in_the_frontend_as_its_api_twin(page: Any, object_info: dict[str, Any], name: str) -> None:
    frontend.load_workflow(page, hostenv.load_ui(name))
    nodes = frontend.graph_nodes(page)
    assert nodes
    missing = [n["type"] for n in nodes if not n["registered"]]
    assert not missing, f"{name}: node types the frontend does not know: {missing}"
    flagged = [n["type"] for n in nodes if n["has_errors"]]
    assert not flagged, f"{name}: nodes flagged with errors: {flagged}"
    for node in nodes:
        if not node["type"].startswith("StableVideo"):
            continue
        expected = {w for w, _ in hostenv.widget_names(object_info[node["type"]]["input"])}
        present = {w["name"] for w in node["widgets"]}
        assert expected <= present, f"{name}: {node['type']} lacks widgets {expected - present}"
    assert frontend.prompt(page) == hostenv.load_api(name)


def test_templates_are_listed_with_thumbnails(server: Any) -> None:
    code, templates = server.request("/workflow_templates")
    # the server lists index.json too; the pack's web/js/templates.js keeps it out of the Template Browser
    assert code == 200 and sorted(templates[PACK]) == sorted([*hostenv.WORKFLOW_NAMES, hostenv.TEMPLATE_INDEX])
    for name in hostenv.WORKFLOW_NAMES:
        thumb = hostenv.WORKFLOWS / f"{name}.jpg"
        assert thumb.is_file(), f"{thumb.name} is missing: run tools/make_thumbnails.py"
        with urllib.request.urlopen(f"{server.url}/api/workflow_templates/{PACK}/{name}.jpg", timeout=10) as r:
            assert r.status == 200 and r.read(3) == b"\xff\xd8\xff"  # a JPEG


def test_the_template_browser_shows_them_under_the_packs_name(page: Any) -> None:
    fetched: dict[str, int] = {}
    page.on("response", lambda r: fetched.__setitem__(r.url.rsplit("/", 1)[-1], r.status)
            if f"/workflow_templates/{PACK}/" in r.url else None)
    frontend.command(page, "Comfy.BrowseTemplates")
    page.get_by_text(PACK, exact=True).first.click()
    page.wait_for_timeout(2000)
    text = page.inner_text("body")
    cards = page.evaluate("() => Array.from(document.querySelectorAll('[data-testid^=\"template-workflow-\"]'))"
                          ".map(e => e.getAttribute('data-testid'))")
    assert cards and not [c for c in cards if c.endswith(f"-{hostenv.TEMPLATE_INDEX}")], f"index.json shown: {cards}"
    for name in hostenv.WORKFLOW_NAMES:
        assert name in text, f"the Template Browser does not show {name}"
        if f"{name}.jpg" not in fetched:  # the cards load their images lazily, when scrolled into view
            page.get_by_text(name, exact=True).first.scroll_into_view_if_needed()
            page.wait_for_timeout(1000)
        assert fetched.get(f"{name}.jpg") == 200, f"{name}'s thumbnail was not fetched: {fetched}"
    # the cards draw them (as blob: images of the thumbnails' width)
    drawn = page.evaluate("() => Array.from(document.images).filter(i => i.complete && i.naturalWidth === 768).length")
    assert drawn >= 1, "no thumbnail of the pack's templates was drawn"
    page.keyboard.press("Escape")
