"""A template opened without its models, in ComfyUI's real web frontend (headless Chromium): the frontend's
missing-models dialog lists each model the template's `models` entries name, with its folder and its Hugging Face
URL, and no entry is refused (unknown folder, a host or a file type the frontend does not download). The test
server has only tiny stand-in checkpoints under other names, so every model is missing. Needs a ComfyUI checkout,
Debian's chromium and pip's playwright; skips with one line without them.
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import hostenv

frontend, CHROMIUM, playwright_api = hostenv.browser_or_skip()

pytestmark = [pytest.mark.host, pytest.mark.browser]
PACK = "comfyui-svd-exact"
# what the frontend writes on an entry it will not download (its missing-models list, ComfyUI_frontend 1.27.10)
REFUSALS = ("Invalid directory", "Download not allowed", "Only allowed suffixes")
WITH_MODELS = sorted(p.stem for p in hostenv.WORKFLOWS.glob("*.json")
                     if p.name != "index.json" and json.loads(p.read_text()).get("models"))


@pytest.fixture(scope="module")
def page(server: Any) -> Iterator[Any]:
    with hostenv.open_browser(server.url) as page:
        yield page


def _dialog_entries(page: Any) -> list[dict[str, Any]]:
    """The missing-models dialog's entries: each one's text and the titles (hover texts) it carries."""
    page.wait_for_selector(".comfy-missing-models", timeout=20000)
    return page.evaluate("""() => Array.from(document.querySelectorAll('.comfy-missing-models li')).map(li => ({
        text: li.innerText, titles: Array.from(li.querySelectorAll('[title]')).map(e => e.getAttribute('title'))}))""")


def _close_dialog(page: Any) -> None:
    for _ in range(20):
        if page.locator(".comfy-missing-models").count() == 0:
            return
        page.keyboard.press("Escape")
        page.wait_for_timeout(250)
    raise AssertionError("the missing-models dialog did not close")


def _check(entries: list[dict[str, Any]], name: str) -> None:
    models = json.loads((hostenv.WORKFLOWS / f"{name}.json").read_text())["models"]
    assert len(entries) == len(models), f"{name}: the dialog lists {entries} for {models}"
    for model in models:
        label = f"{model['directory']} / {model['name']}"
        found = [e for e in entries if label in e["text"]]
        assert len(found) == 1, f"{name}: no entry '{label}' in {entries}"
        assert model["url"] in found[0]["titles"], f"{name}: {label} does not carry {model['url']}: {found[0]}"
        refused = [r for r in REFUSALS if r in found[0]["text"]]
        assert not refused, f"{name}: the frontend refuses {label}: {found[0]['text']}"


def test_a_template_opened_from_the_template_browser_offers_its_model(page: Any) -> None:
    frontend.command(page, "Comfy.BrowseTemplates")
    page.get_by_text(PACK, exact=True).first.click()
    page.get_by_text("image_to_video", exact=True).first.click()
    _check(_dialog_entries(page), "image_to_video")
    _close_dialog(page)


@pytest.mark.parametrize("name", WITH_MODELS)
def test_each_template_offers_each_of_its_models(page: Any, server: Any, name: str) -> None:
    # what the Template Browser does with a pack's template: fetch it from the server, then app.loadGraphData
    page.evaluate("""async ([url, name]) => {
        const wf = await (await fetch(url)).json();
        await window.app.loadGraphData(wf, true, true, name);
    }""", [f"{server.url}/api/workflow_templates/{PACK}/{name}.json", name])
    _check(_dialog_entries(page), name)
    _close_dialog(page)
