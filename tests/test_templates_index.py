"""The templates' metadata: example_workflows/index.json (a title and a description for each template, in the
layout of the core templates' index.json: a list of categories, each with its `templates`) against the files
present, and the `models` entry of every template that loads a model: what ComfyUI's frontend reads to offer a
missing model for download (the entry's `name` equal to the loader's widget value, the folder it goes to, and an
official Hugging Face `/resolve/` URL of a `.safetensors` file, the only kind the frontend downloads).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

WORKFLOWS = Path(__file__).resolve().parents[1] / "example_workflows"
INDEX = WORKFLOWS / "index.json"
# the widgets that name a model file, and the models folder each reads (folder_paths' names, as the frontend's
# missing-models check looks them up): the pack's loader and the core loaders a template may use
MODEL_WIDGETS = {
    ("StableVideoCheckpointLoader", "ckpt_name"): "checkpoints",
    ("StableVideoCheckpointLoader", "unet_name"): "diffusion_models",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("VAELoader", "vae_name"): "vae",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
}
NO_MODEL = "none"  # the pack loader's unet_name when the checkpoint's own UNet is used
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf")
# https://huggingface.co/<owner>/<repo>/resolve/<revision>/<path in the repo>
HF_RESOLVE = re.compile(r"^https://huggingface\.co/[\w.-]+/[\w.-]+/resolve/[\w.-]+/(?:[\w.-]+/)*[\w.-]+\.safetensors$")


def _templates() -> list[str]:
    return sorted(p.stem for p in WORKFLOWS.glob("*.json") if p != INDEX)


def _index_entries() -> list[dict[str, Any]]:
    categories = json.loads(INDEX.read_text())
    assert isinstance(categories, list) and categories, "index.json: a list of categories, as the core index"
    entries = []
    for category in categories:
        assert category["title"] and category["moduleName"], category
        assert isinstance(category["templates"], list), category["title"]
        entries += category["templates"]
    return entries


def _models_loaded(name: str) -> dict[str, str]:
    """{file name: models folder} of every model a template's API twin loads."""
    api = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    wanted: dict[str, str] = {}
    for node_id, node in api.items():
        for widget, value in node["inputs"].items():
            folder = MODEL_WIDGETS.get((node["class_type"], widget))
            if folder is not None and value != NO_MODEL:
                wanted[value] = folder
            elif isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
                pytest.fail(f"{name}: node {node_id} ({node['class_type']}) names a model file in '{widget}' "
                            f"('{value}'): add its widget and folder to MODEL_WIDGETS")
    return wanted


def test_every_template_is_listed_once_with_a_title_and_a_description() -> None:
    entries = _index_entries()
    names = [e["name"] for e in entries]
    assert sorted(names) == _templates(), "index.json must list each example_workflows/*.json once"
    assert len(set(names)) == len(names)
    for e in entries:
        assert isinstance(e["title"], str) and e["title"].strip(), e["name"]
        assert isinstance(e["description"], str) and len(e["description"]) >= 40, e["name"]
        assert e["title"] != e["name"] and e["description"] != e["title"], e["name"]


def test_every_listed_template_has_its_files() -> None:
    titles = set()
    for e in _index_entries():
        for path in (WORKFLOWS / f"{e['name']}.json", WORKFLOWS / "api" / f"{e['name']}.json",
                     WORKFLOWS / f"{e['name']}.{e['mediaSubtype']}"):
            assert path.is_file(), f"index.json lists {e['name']}, but {path.relative_to(WORKFLOWS)} is missing"
        assert e["mediaType"] == "image" and e["mediaSubtype"] == "jpg", e  # the thumbnails ComfyUI looks for
        titles.add(e["title"])
    assert len(titles) == len(_index_entries()), "two templates share a title"


@pytest.mark.parametrize("name", _templates())
def test_each_model_a_template_loads_has_its_download_entry(name: str) -> None:
    ui = json.loads((WORKFLOWS / f"{name}.json").read_text())
    wanted = _models_loaded(name)
    entries = ui.get("models", [])
    assert {e["name"] for e in entries} == set(wanted), f"{name}: models entries {entries} for {wanted}"
    assert len(entries) == len(wanted), f"{name}: a model listed twice"
    widget_values = {v for n in ui["nodes"] for v in n.get("widgets_values", []) if isinstance(v, str)}
    for e in entries:
        assert set(e) <= {"name", "url", "directory", "hash", "hash_type"}, e
        assert e["directory"] == wanted[e["name"]], f"{name}: {e['name']} goes to {wanted[e['name']]}"
        assert e["name"] in widget_values, f"{name}: no widget of the UI workflow is set to {e['name']}"
        assert HF_RESOLVE.match(e["url"]), f"{name}: {e['url']} is not a Hugging Face /resolve/ .safetensors URL"
        assert e["url"].rsplit("/", 1)[-1] == e["name"], f"{name}: {e['url']} downloads another file name"


def test_a_model_has_one_url_across_templates() -> None:
    urls: dict[str, set[str]] = {}
    for name in _templates():
        for e in json.loads((WORKFLOWS / f"{name}.json").read_text()).get("models", []):
            urls.setdefault(e["name"], set()).add(e["url"])
    assert urls and all(len(u) == 1 for u in urls.values()), urls
