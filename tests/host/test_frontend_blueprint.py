"""The subgraph blueprint subgraphs/Image to video (SVD-XT 1.1).json in ComfyUI's real web frontend (headless
Chromium), installed as the README says for ComfyUI v0.3.64 (frontend 1.27.10 lists blueprints from the user's
`user/default/subgraphs/` only): it is listed among the node library's Subgraph Blueprints with its description and
found by the node search; added to a graph, wired to an image and a save node and unpacked, it is the five-node
chain whose prompt is the image_to_video template's. Needs a ComfyUI checkout, Debian's chromium and pip's
playwright; skips with one line without them.
"""
from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

import hostenv

frontend, CHROMIUM, playwright_api = hostenv.browser_or_skip()

pytestmark = [pytest.mark.host, pytest.mark.browser]
NAME = "Image to video (SVD-XT 1.1)"
BLUEPRINT = hostenv.REPO / "subgraphs" / f"{NAME}.json"
CHAIN = ["StableVideoCheckpointLoader", "StableVideoConditioning", "StableVideoEmptyLatent", "StableVideoSampler",
         "StableVideoDecode"]
# the frontend's names for a blueprint's node definition (its subgraph store, ComfyUI_frontend 1.27.10)
BLUEPRINT_TYPE = f"SubgraphBlueprint.{NAME}"
BLUEPRINT_CATEGORY = "Subgraph Blueprints"


@pytest.fixture(scope="module")
def page(server: Any) -> Iterator[Any]:
    """The app opened after the blueprint was copied into the server's user/default/subgraphs/."""
    folder = server.base / "user" / "default" / "subgraphs"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(BLUEPRINT, folder / BLUEPRINT.name)
    with hostenv.open_browser(server.url) as page:
        yield page


def _blueprint_def(page: Any) -> dict[str, Any] | None:
    """The node definition the frontend made of the blueprint (from its Pinia node-definition store)."""
    return page.evaluate("""(type) => {
        const pinia = document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia;
        const def = pinia._s.get('nodeDef').nodeDefs.find(d => d.name === type);
        return def ? {display_name: def.display_name, category: def.category, description: def.description,
                      inputs: Object.keys(def.inputs), outputs: def.outputs.map(o => o.name)} : null;
    }""", BLUEPRINT_TYPE)


def _chain(prompt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A prompt keyed by class type (each appears once), links as (origin's class type, output slot)."""
    types = {k: v["class_type"] for k, v in prompt.items()}
    assert len(set(types.values())) == len(types), types
    return {v["class_type"]: {name: (types[x[0]], x[1]) if isinstance(x, list) else x
                              for name, x in v["inputs"].items()} for v in prompt.values()}


def test_the_blueprint_file_is_one_subgraph_node_of_the_five_nodes() -> None:
    bp = json.loads(BLUEPRINT.read_text())
    (node,) = bp["nodes"]
    (sub,) = bp["definitions"]["subgraphs"]
    assert node["type"] == sub["id"] and sub["name"] == NAME
    assert [n["type"] for n in sub["nodes"]] == CHAIN
    assert [i["name"] for i in sub["inputs"]] == ["image"]
    assert [o["name"] for o in sub["outputs"]] == ["images", "video"]
    assert len(bp["extra"]["BlueprintDescription"]) > 40
    loader = sub["nodes"][0]
    (model,) = loader["properties"]["models"]  # offered for download when a graph holding it misses the file
    assert model["name"] == loader["widgets_values"][0] == "svd_xt_1_1.safetensors"


def test_it_is_listed_with_its_description(page: Any) -> None:
    listed = _blueprint_def(page)
    assert listed is not None, f"the frontend did not load {BLUEPRINT.name} from user/default/subgraphs"
    assert listed["display_name"] == NAME and listed["category"] == BLUEPRINT_CATEGORY
    assert listed["description"] == json.loads(BLUEPRINT.read_text())["extra"]["BlueprintDescription"]
    assert listed["inputs"] == ["image"] and listed["outputs"] == ["images", "video"]
    frontend.command(page, "Workspace.ToggleSidebarTab.node-library")
    page.get_by_text(BLUEPRINT_CATEGORY, exact=True).first.click()
    assert page.get_by_text(NAME, exact=True).count() >= 1, "the node library does not show the blueprint"
    frontend.command(page, "Workspace.ToggleSidebarTab.node-library")


def test_the_node_search_finds_it(page: Any) -> None:
    frontend.command(page, "Workspace.SearchBox.Toggle")
    page.keyboard.type("Image to video (SVD")
    page.wait_for_timeout(1000)
    options = page.locator(".p-autocomplete-option")
    texts = [options.nth(i).inner_text() for i in range(options.count())]
    assert any(NAME in t for t in texts), f"the node search offers {texts}"
    page.keyboard.press("Escape")


def test_added_and_unpacked_it_is_the_image_to_video_chain(page: Any) -> None:
    frontend.load_workflow(page, {"last_node_id": 0, "last_link_id": 0, "nodes": [], "links": [], "groups": [],
                                  "config": {}, "extra": {}, "version": 0.4})
    frontend.command(page, "Workspace.ToggleSidebarTab.node-library")
    page.get_by_text(BLUEPRINT_CATEGORY, exact=True).first.click()
    page.get_by_text(NAME, exact=True).first.click()  # what a click on a node library leaf does: add it
    frontend.command(page, "Workspace.ToggleSidebarTab.node-library")
    page.wait_for_timeout(500)
    (added,) = frontend.graph_nodes(page)
    api = hostenv.load_api("image_to_video")
    load, save = (next(v for v in api.values() if v["class_type"] == t) for t in ("LoadImage", "SaveAnimatedWEBP"))
    # the template's image and save nodes around it, then Unpack Subgraph on the selected blueprint node
    page.evaluate("""([load, save]) => {
        const g = window.app.graph, sub = g._nodes[0];
        const image = LiteGraph.createNode('LoadImage'); g.add(image);
        image.widgets.find(w => w.name === 'image').value = load.inputs.image;
        const out = LiteGraph.createNode('SaveAnimatedWEBP'); g.add(out);
        for (const [name, value] of Object.entries(save.inputs))
            if (!Array.isArray(value)) out.widgets.find(w => w.name === name).value = value;
        image.connect(0, sub, 0);
        sub.connect(0, out, 0);
        window.app.canvas.deselectAll(); window.app.canvas.select(sub);
    }""", [load, save])
    frontend.command(page, "Comfy.Graph.UnpackSubgraph")
    page.wait_for_timeout(500)
    nodes = frontend.graph_nodes(page)
    assert sorted(n["type"] for n in nodes) == sorted([*CHAIN, "LoadImage", "SaveAnimatedWEBP"]), added
    assert all(n["registered"] and not n["has_errors"] for n in nodes), nodes
    assert _chain(frontend.prompt(page)) == _chain(api)
