"""The pack's translations (locales/<lang>/main.json and nodeDefs.json) against the live node schemas.

Every node, input and output of the pack has its entry in every language, no locale names something the pack
does not have, English equals what the code declares (tools/locales.py writes it), every combo input's tooltip
names each of its options in every language (no frontend translates combo values: the tooltip is where they are
explained), and numbers and placeholders are kept. Each language under locales/ is checked, the required ones
must all be there.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)
sys.path.insert(0, str(hostenv.REPO / "tools"))
import locales  # noqa: E402

pytestmark = pytest.mark.host
FILES = ("main.json", "nodeDefs.json")
PRESENT = sorted(p.name for p in locales.LOCALES.iterdir() if p.is_dir()) if locales.LOCALES.is_dir() else []
LANGUAGES = sorted(set(locales.LANGUAGES) | set(PRESENT), key=lambda x: (x not in locales.LANGUAGES, x))
# numbers (12, 0.002, 1e-5) and the code-like tokens of a text that a translation must keep as they are
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?(?![\w])")


@pytest.fixture(scope="module")
def infos(comfy_nodes: Any) -> dict[str, Any]:
    classes = locales.pack_classes(comfy_nodes.NODE_CLASS_MAPPINGS)
    assert classes, "the pack registered no node in the host"
    return locales.node_infos(classes.values())


@pytest.fixture(scope="module")
def english(infos: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return locales.english(infos)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate keys {dup}")
    return dict(pairs)


def load(lang: str, name: str) -> dict[str, Any]:
    path = locales.LOCALES / lang / name
    assert path.is_file(), f"{path.relative_to(hostenv.REPO)} is missing"
    try:
        tree = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates)
    except ValueError as e:
        pytest.fail(f"{path.relative_to(hostenv.REPO)} is not valid JSON: {e}")
    assert isinstance(tree, dict), f"{path.relative_to(hostenv.REPO)}: expected a JSON object"
    return tree


def _path(key: tuple[str, ...]) -> str:
    return ".".join(key)


def test_english_equals_the_node_schemas(infos: dict[str, Any], english: tuple[dict, dict]) -> None:
    assert locales.english_diff(infos) == "", "locales/en differs from the node schemas: run python tools/locales.py"
    main, node_defs = english
    assert set(node_defs) == {locales.i18n_key(n) for n in infos}
    assert main["nodeCategories"], "the pack's own category is missing from main.json"


def test_every_required_language_is_shipped() -> None:
    missing = [lang for lang in locales.LANGUAGES for name in FILES if not (locales.LOCALES / lang / name).is_file()]
    assert not missing, f"languages without their locale files: {sorted(set(missing))} (required: {locales.LANGUAGES})"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_locale_has_every_entry_and_nothing_else(lang: str, english: tuple[dict, dict]) -> None:
    problems = []
    for name, reference in zip(FILES, english, strict=True):
        expected = locales.leaves(reference)
        got = locales.leaves(load(lang, name))
        missing = sorted(_path(k) for k in expected.keys() - got.keys())
        extra = sorted(_path(k) for k in got.keys() - expected.keys())
        empty = sorted(_path(k) for k, v in got.items() if not isinstance(v, str) or not v.strip())
        if missing:
            problems.append(f"{name}: no entry for {missing}")
        if extra:
            problems.append(f"{name}: entries for what the pack does not have: {extra}")
        if empty:
            problems.append(f"{name}: empty or not text: {empty}")
    assert not problems, f"locales/{lang}: " + "; ".join(problems)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_combo_options_are_named_in_each_tooltip(lang: str, infos: dict[str, Any]) -> None:
    node_defs = load(lang, "nodeDefs.json")
    unnamed = []
    for (node, name), options in locales.fixed_options(infos).items():
        tip = node_defs.get(node, {}).get("inputs", {}).get(locales.i18n_key(name), {}).get("tooltip", "")
        for option in options:
            if not re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", tip, flags=re.ASCII):
                unnamed.append(f"{node}.{name}: {option}")
    assert not unnamed, (f"locales/{lang}: combo options a tooltip does not name (the frontend shows the values "
                         f"untranslated; the tooltip explains them): {unnamed}")


@pytest.mark.parametrize("lang", [lang for lang in LANGUAGES if lang != "en"])
def test_numbers_are_kept(lang: str, english: tuple[dict, dict]) -> None:
    reference = locales.leaves(english[1])
    got = locales.leaves(load(lang, "nodeDefs.json"))
    lost = []
    for key, text in reference.items():
        if key not in got or not isinstance(got[key], str):
            continue  # reported by test_locale_has_every_entry_and_nothing_else
        want = set(NUMBER.findall(text))
        have = set(NUMBER.findall(got[key]))
        if want - have:
            lost.append(f"{_path(key)}: {sorted(want - have)}")
    assert not lost, f"locales/{lang}: numbers of the English text missing from the translation: {lost}"


def test_the_host_serves_them_at_i18n(comfy_nodes: Any, host_root: Path, english: tuple[dict, dict],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI's own loader (the code behind GET /i18n) finds the pack's files in a custom_nodes folder and puts
    nodeDefs.json under `nodeDefs`, main.json's keys at the top."""
    import folder_paths
    from app.custom_node_manager import CustomNodeManager

    # the in-process host's custom_nodes folder, where the pack is linked (hostenv.start_inprocess_host)
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "custom_nodes", ([str(host_root / "custom_nodes")], set()))
    served = CustomNodeManager().build_translations()
    for lang in PRESENT:
        assert lang in served, f"/i18n does not serve {lang}"
        for node in english[1]:
            assert node in served[lang].get("nodeDefs", {}), f"/i18n[{lang}] lacks nodeDefs.{node}"
        for part in english[0]["nodeCategories"]:
            assert part in served[lang].get("nodeCategories", {}), f"/i18n[{lang}] lacks nodeCategories.{part}"
