"""The pack's translations for ComfyUI's web frontend: `locales/<lang>/main.json` and `locales/<lang>/nodeDefs.json`.

    python tools/locales.py            # rewrite locales/en/ from the node schemas
    python tools/locales.py --check    # exit 1 when locales/en/ differs from the node schemas

English is never written by hand: it is dumped from what the nodes declare (each class's GET_NODE_INFO_V1(), the
very dictionary ComfyUI serves at /object_info), so it always equals the code. The other languages are written by
hand with the same keys; tests/host/test_locales.py checks every language against the live schemas.

How ComfyUI v0.3.64 and its frontend 1.27.10 use these files (facts, read from their sources):
- The server merges every custom node's `locales/<lang>/main.json` with `nodeDefs.json` (and commands.json,
  settings.json) put under the key `nodeDefs`, and serves the result at GET /i18n
  (app/custom_node_manager.py, build_translations). The frontend merges it into its own messages at start-up.
- `nodeDefs.<NodeId>.display_name` and `.description` replace the node's title and description;
  `nodeDefs.<NodeId>.inputs.<input>.name` is the widget's label and the input slot's name, `.tooltip` the hover text
  of the widget or slot; `nodeDefs.<NodeId>.outputs.<index>.name` and `.tooltip` the same for output slots, keyed by
  the output's index. Keys have their dots replaced by underscores (normalizeI18nKey).
- `main.json`'s `nodeCategories.<part>` translates each `/`-separated part of a node's category.
- No frontend (1.27.10, nor any later one we found) translates the values of a COMBO widget: a combo shows its
  option values as the code names them (they are also what a saved workflow stores). So no key for options exists
  and none is made up here; instead each combo input's tooltip names every one of its options and says what it
  does, in every language (FIXED_OPTIONS lists the options each tooltip must name).
"""
from __future__ import annotations

import argparse
import asyncio
import difflib
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LOCALES = REPO / "locales"
# the languages the pack ships, all of those the frontend's Language setting (Comfy.Locale) offers but Arabic
LANGUAGES = ("en", "zh", "zh-TW", "ja", "ko", "fr", "ru", "es")
PACKAGE = "comfyui_svd_exact_locales"  # the module name the standalone import gives the pack
# core's own top-level category: the frontend's main.json translates it in every language; overriding it here
# would rename core's video nodes' folder too
CORE_CATEGORIES = frozenset({"video"})
# combo inputs whose options are file names found at run time: only these fixed options are the pack's
FILE_COMBOS: dict[tuple[str, str], tuple[str, ...]] = {
    ("StableVideoCheckpointLoader", "ckpt_name"): (),
    ("StableVideoCheckpointLoader", "unet_name"): ("none",),
}

log = logging.getLogger("locales")
Json = dict[str, Any]


def i18n_key(name: str) -> str:
    """The frontend's normalizeI18nKey: dots become underscores."""
    return name.replace(".", "_")


# --- the node schemas -----------------------------------------------------------------------------------------

def load_pack_nodes(comfy: Path | None = None) -> list[type]:
    """The pack's node classes as its entry point registers them, imported without starting ComfyUI: the ComfyUI
    checkout (COMFYUI_PATH, default ~/ComfyUI) only has to be importable."""
    comfy = comfy or Path(os.environ.get("COMFYUI_PATH", "~/ComfyUI")).expanduser()
    if not (comfy / "comfy_api").is_dir():
        raise SystemExit(f"ComfyUI not found at {comfy}: set COMFYUI_PATH to a ComfyUI checkout")
    if str(comfy) not in sys.path:
        sys.path.insert(0, str(comfy))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import utils.extra_config  # noqa: F401  (before anything imports `utils`: otherwise it is comfy/utils.py)

    module = sys.modules.get(PACKAGE)
    if module is None:
        spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "__init__.py",
                                                      submodule_search_locations=[str(REPO)])
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = module
        spec.loader.exec_module(module)

    async def node_list() -> list[type]:
        extension = await module.comfy_entrypoint()
        return list(await extension.get_node_list())

    return asyncio.run(node_list())


def pack_classes(mapping: Mapping[str, type]) -> dict[str, type]:
    """The pack's own classes among a host's NODE_CLASS_MAPPINGS (those defined in files of this repository)."""
    import inspect

    out = {}
    for node_id, cls in mapping.items():
        try:
            path = Path(inspect.getfile(cls)).resolve()
        except (TypeError, OSError):
            continue
        if REPO in path.parents:
            out[node_id] = cls
    return out


def node_infos(classes: Iterable[type]) -> dict[str, Json]:
    """What /object_info serves for each class (GET_NODE_INFO_V1), by node id, in registration order."""
    infos = {}
    for cls in classes:
        info = cls.GET_NODE_INFO_V1()  # type: ignore[attr-defined]
        infos[info["name"]] = info
    return infos


def _inputs(info: Json) -> list[tuple[str, Json]]:
    """(name, options) of each input the frontend shows, in its order (hidden inputs are no widgets or slots)."""
    out = []
    for section in ("required", "optional"):
        order = info.get("input_order", {}).get(section) or list(info["input"].get(section, {}))
        for name in order:
            spec = info["input"][section][name]
            out.append((name, spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return out


def _is_combo(info: Json, name: str) -> bool:
    for section in ("required", "optional"):
        spec = info["input"].get(section, {}).get(name)
        if spec is not None:
            return spec[0] == "COMBO" or isinstance(spec[0], list)
    return False


def fixed_options(infos: Mapping[str, Json]) -> dict[tuple[str, str], tuple[str, ...]]:
    """Per combo input, the options the pack itself defines (not file names), which its tooltip must name."""
    out: dict[tuple[str, str], tuple[str, ...]] = {}
    for node_id, info in infos.items():
        for name, opts in _inputs(info):
            if not _is_combo(info, name):
                continue
            if (node_id, name) in FILE_COMBOS:
                out[(node_id, name)] = FILE_COMBOS[(node_id, name)]
                continue
            options = opts.get("options")
            if options is None:  # the V1 form: ["a", "b"] as the type
                options = next(info["input"][s][name][0] for s in ("required", "optional")
                               if name in info["input"].get(s, {}))
            out[(node_id, name)] = tuple(str(o) for o in options)
    return out


def categories(infos: Mapping[str, Json]) -> list[str]:
    """The parts of the pack's categories that are its own (not core's), in order of first use."""
    parts: list[str] = []
    for info in infos.values():
        for part in info["category"].split("/"):
            if part not in CORE_CATEGORIES and part not in parts:
                parts.append(part)
    return parts


# --- English ----------------------------------------------------------------------------------------------------

def english(infos: Mapping[str, Json]) -> tuple[Json, Json]:
    """(main.json, nodeDefs.json) in English, from the schemas: every text exactly as the code declares it."""
    node_defs: Json = {}
    for node_id, info in infos.items():
        entry: Json = {"display_name": info.get("display_name") or node_id}
        if info.get("description"):
            entry["description"] = info["description"]
        inputs: Json = {}
        for name, opts in _inputs(info):
            inputs[i18n_key(name)] = {"name": name, **({"tooltip": opts["tooltip"]} if opts.get("tooltip") else {})}
        if inputs:
            entry["inputs"] = inputs
        tooltips = info.get("output_tooltips") or []
        outputs: Json = {}
        for index, name in enumerate(info.get("output_name") or []):
            tip = tooltips[index] if index < len(tooltips) else None
            outputs[str(index)] = {"name": name, **({"tooltip": tip} if tip else {})}
        if outputs:
            entry["outputs"] = outputs
        node_defs[i18n_key(node_id)] = entry
    main = {"nodeCategories": {i18n_key(part): part for part in categories(infos)}}
    return main, node_defs


def leaves(tree: Json, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every leaf of a JSON tree by its key path."""
    out: dict[tuple[str, ...], Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(leaves(value, (*prefix, key)))
        else:
            out[(*prefix, key)] = value
    return out


def dumps(tree: Json) -> str:
    return json.dumps(tree, indent=2, ensure_ascii=False) + "\n"


def write_english(infos: Mapping[str, Json], root: Path = LOCALES) -> list[Path]:
    main, node_defs = english(infos)
    (root / "en").mkdir(parents=True, exist_ok=True)
    paths = [root / "en" / "main.json", root / "en" / "nodeDefs.json"]
    for path, tree in zip(paths, (main, node_defs), strict=True):
        path.write_text(dumps(tree), encoding="utf-8")
    return paths


def english_diff(infos: Mapping[str, Json], root: Path = LOCALES) -> str:
    """A unified diff from the English files on disk to what the schemas give ('' when equal)."""
    out = []
    for name, tree in zip(("main.json", "nodeDefs.json"), english(infos), strict=True):
        path = root / "en" / name
        old = path.read_text(encoding="utf-8") if path.is_file() else ""
        out += difflib.unified_diff(old.splitlines(True), dumps(tree).splitlines(True), str(path), "schemas")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare locales/en with the schemas")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger().setLevel(logging.WARNING)  # ComfyUI's imports log a lot
    log.setLevel(logging.INFO)
    infos = node_infos(load_pack_nodes())
    if args.check:
        diff = english_diff(infos)
        if diff:
            sys.stdout.write(diff)
            log.error("locales/en differs from the node schemas: run python tools/locales.py")
            return 1
        log.info("locales/en equals the schemas of %d nodes", len(infos))
        return 0
    for path in write_english(infos):
        log.info("wrote %s", path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
