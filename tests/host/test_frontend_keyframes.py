"""The keyframe-sequence node in ComfyUI's real web frontend (headless Chromium): web/js/keyframes.js shows the
connected keyframes plus one empty slot, the node grows as images are connected and shrinks as they are
disconnected, and the keyframe_sequence template, loaded, regrown, saved and opened again, makes its API twin
(app.graphToPrompt)."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import hostenv

frontend, CHROMIUM, playwright_api = hostenv.browser_or_skip()

pytestmark = [pytest.mark.host, pytest.mark.browser]
NODE = "StableVideoKeyframeSequence"
TEMPLATE = "keyframe_sequence"


@pytest.fixture(scope="module")
def page(server: Any) -> Iterator[Any]:
    with hostenv.open_browser(server.url) as page:
        yield page


def _keyframe_slots(page: Any, node_id: int) -> list[tuple[str, bool]]:
    """(name, connected) of the node's keyframe inputs, in slot order."""
    return [tuple(s) for s in page.evaluate("""(id) => window.app.graph.getNodeById(id).inputs
        .filter(i => /^keyframe_\\d+$/.test(i.name)).map(i => [i.name, i.link != null])""", node_id)]


def _connect(page: Any, origin: int, target: int, name: str) -> None:
    """What dragging a link does: origin's first output to target's input `name`."""
    page.evaluate("""([o, t, name]) => { const g = window.app.graph, n = g.getNodeById(t);
        g.getNodeById(o).connect(0, n, n.inputs.findIndex(i => i.name === name)); }""", [origin, target, name])


def _disconnect(page: Any, target: int, name: str) -> None:
    page.evaluate("""([t, name]) => { const n = window.app.graph.getNodeById(t);
        n.disconnectInput(n.inputs.findIndex(i => i.name === name)); }""", [target, name])


def _node_id(page: Any, node_type: str) -> int:
    return int(page.evaluate("(t) => window.app.graph._nodes.find(n => n.type === t).id", node_type))


def test_a_new_node_grows_as_keyframes_are_connected_and_shrinks_back(page: Any) -> None:
    frontend.load_workflow(page, {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [],
                                  "config": {}, "extra": {}, "version": 0.4})
    ids = page.evaluate("""() => { const g = window.app.graph;
        const seq = LiteGraph.createNode('StableVideoKeyframeSequence'); g.add(seq);
        const img = LiteGraph.createNode('LoadImage'); g.add(img); return [seq.id, img.id]; }""")
    seq, image = int(ids[0]), int(ids[1])
    assert _keyframe_slots(page, seq) == [("keyframe_1", False), ("keyframe_2", False), ("keyframe_3", False)]
    for name in ("keyframe_1", "keyframe_2"):
        _connect(page, image, seq, name)
    assert [n for n, _ in _keyframe_slots(page, seq)] == ["keyframe_1", "keyframe_2", "keyframe_3"]
    _connect(page, image, seq, "keyframe_3")
    assert _keyframe_slots(page, seq) == [("keyframe_1", True), ("keyframe_2", True), ("keyframe_3", True),
                                          ("keyframe_4", False)]
    _connect(page, image, seq, "keyframe_4")
    assert _keyframe_slots(page, seq)[-2:] == [("keyframe_4", True), ("keyframe_5", False)]
    _disconnect(page, seq, "keyframe_4")
    _disconnect(page, seq, "keyframe_3")
    assert _keyframe_slots(page, seq) == [("keyframe_1", True), ("keyframe_2", True), ("keyframe_3", False)]
    prompt = frontend.prompt(page)[str(seq)]["inputs"]
    assert {k for k in prompt if k.startswith("keyframe_")} == {"keyframe_1", "keyframe_2"}


def test_the_template_grows_to_three_keyframes_and_makes_its_api_twin(page: Any) -> None:
    frontend.load_workflow(page, hostenv.load_ui(TEMPLATE))
    nodes = frontend.graph_nodes(page)
    assert all(n["registered"] and not n["has_errors"] for n in nodes), nodes
    seq, scale = _node_id(page, NODE), _node_id(page, "ImageScale")
    shown = [("keyframe_1", True), ("keyframe_2", True), ("keyframe_3", True), ("keyframe_4", False)]
    assert _keyframe_slots(page, seq) == shown  # as saved: the connected ones and one empty slot
    assert frontend.prompt(page) == hostenv.load_api(TEMPLATE)
    _disconnect(page, seq, "keyframe_3")
    assert _keyframe_slots(page, seq) == [("keyframe_1", True), ("keyframe_2", True), ("keyframe_3", False)]
    _connect(page, scale, seq, "keyframe_3")  # a third image again: keyframe_3 connected, keyframe_4 empty
    assert _keyframe_slots(page, seq) == shown
    assert frontend.prompt(page) == hostenv.load_api(TEMPLATE)
    saved = page.evaluate("() => window.app.graph.serialize()")  # saved as grown, then opened again
    frontend.load_workflow(page, saved)
    assert _keyframe_slots(page, seq) == shown
    assert frontend.prompt(page) == hostenv.load_api(TEMPLATE)
