"""The nodes' help pages (web/docs/), laid out as ComfyUI's frontend looks for them, checked against the pack.

The frontend (comfyui-frontend-package 1.27, `NodeHelpService.fetchCustomNodeHelp`) asks for a custom node's help
at `/extensions/<pack folder>/docs/<NodeId>/<locale>.md`, then at `/extensions/<pack folder>/docs/<NodeId>.md`;
ComfyUI serves the pack's WEB_DIRECTORY (web/) under `/extensions/<pack folder>`. So the English page is
`web/docs/<NodeId>.md` (the fallback of every locale without its own page) and the Chinese one
`web/docs/<NodeId>/zh.md`. The frontend renders the page with `marked` and rewrites relative image and video
sources against `/extensions/<pack folder>/docs/`, but not link targets: a relative link would resolve against the
app's own URL, so the pages link the README by its absolute address.

Without a ComfyUI checkout the layout and link tests run on the node ids read from nodes/*.py; with one, the pages
are checked against the live schemas: every input and output listed, with its type, default and range, and no
name a page uses in code spans that the pack lacks.
"""
from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import hostenv

REPO = hostenv.REPO
DOCS = REPO / "web" / "docs"
README = REPO / "README.md"
LANGS = ("en", "zh")
# the section headings the checks read, per language
INPUTS = {"en": "Inputs", "zh": "输入"}
OUTPUTS = {"en": "Outputs", "zh": "输出"}
# how a page writes an input's default and range (an en and a zh bullet's head: "(INT, default 30, 1 to 1000)",
# "（INT，默认 30，范围 1 至 1000）")
DEFAULT = {"en": "default {}", "zh": "默认 {}"}
RANGE = {"en": "{} to {}", "zh": "范围 {} 至 {}"}
EMPTY = {"en": "default empty", "zh": "默认为空"}
ON_OFF = {"en": {True: "default on", False: "default off"}, "zh": {True: "默认开启", False: "默认关闭"}}
OPTIONAL = {"en": "optional", "zh": "可选"}
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
PACK_MODULE = "custom_nodes.comfyui-svd-exact"
PANEL_COLUMNS = 25
# a node title as pages write it: "Stable Video Sampler", "Empty Stable Video Latent", "Stable Video 采样器"
TITLE = r"(?:Load |Empty |空 )?Stable Video(?:(?: [A-Z][A-Za-z0-9]*)+[\u4e00-\u9fff]*| [\u4e00-\u9fff]+)?"


def repository_url() -> str:
    m = re.search(r'^Repository = "([^"]+)"', (REPO / "pyproject.toml").read_text(encoding="utf-8"), flags=re.M)
    assert m, "pyproject.toml has no [project.urls] Repository"
    return m.group(1).rstrip("/")


def page_path(node_id: str, lang: str) -> Path:
    return DOCS / f"{node_id}.md" if lang == "en" else DOCS / node_id / f"{lang}.md"


def source_node_ids() -> set[str]:
    """The node ids declared in nodes/*.py (`node_id="..."` of each io.Schema)."""
    ids: set[str] = set()
    for path in (REPO / "nodes").glob("*.py"):
        ids.update(re.findall(r'node_id="(\w+)"', path.read_text(encoding="utf-8")))
    return ids


def source_display_names() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "nodes").glob("*.py"):
        names.update(n for n in re.findall(r'display_name="([^"]+)"', path.read_text(encoding="utf-8"))
                     if "Stable Video" in n)
    return names


def translations(lang: str) -> dict[str, Any]:
    """The pack's node translations for `lang` (locales/<lang>/nodeDefs.json, what the frontend shows), or {}."""
    path = REPO / "locales" / lang / "nodeDefs.json"
    return json.loads(path.read_text(encoding="utf-8")) if lang != "en" and path.is_file() else {}


def bare(title: str) -> str:
    """A node title without its closing parenthesis: "Stable Video Sampler (exact)", "Stable Video 采样器（精确）"."""
    return re.sub(r"\s*[(（][^(（]*[)）]$", "", title)


def pages() -> Iterator[tuple[str, str, Path]]:
    for node_id in sorted(source_node_ids()):
        for lang in LANGS:
            yield node_id, lang, page_path(node_id, lang)


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_anchors() -> set[str]:
    anchors: set[str] = set()
    fenced = False
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"#{1,6} (.+)", line)):
            anchors.add(slug(m.group(1)))
    return anchors


def prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def section(text: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert m, f"no '## {title}' section"
    return m.group(1)


def bullets(block: str) -> list[str]:
    """The top-level list items of a section, each with its continuation lines joined."""
    items: list[str] = []
    for line in block.splitlines():
        if line.startswith("- "):
            items.append(line[2:].strip())
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    return items


def bullet_names(item: str) -> tuple[list[str], str, str]:
    """The input names a bullet documents (`keyframe_3` ... `keyframe_16` is a range), the label written after
    them (the Chinese pages: the name the translated UI shows) and its head (the parenthesis after them: type,
    default, range)."""
    m = re.match(r"((?:`\w+`[\s.…,]*)+)([^(（]*?)\s*[(（]([^)）]*)[)）]", item)
    assert m, f"a bullet that does not start with `name` (type, ...): {item[:80]!r}"
    names = re.findall(r"`(\w+)`", m.group(1))
    if len(names) == 2 and re.search(r"\.\.\.|…", m.group(1)):
        a, b = (re.fullmatch(r"(\w*?)(\d+)", n) for n in names)
        assert a and b and a.group(1) == b.group(1), f"not a range of inputs: {names}"
        names = [f"{a.group(1)}{i}" for i in range(int(a.group(2)), int(b.group(2)) + 1)]
    return names, m.group(2).strip(), m.group(3)


def number_forms(value: float) -> list[str]:
    """How a page may write a number: 30, 0.002, 700 (for 700.0), 3.0, 1e-5 (for 1e-05), 2^64 - 1."""
    if value == 2**64 - 1:
        return ["2^64 - 1"]
    forms = [f"{value:g}", f"{value:g}".replace("e-0", "e-")]
    if float(value).is_integer():
        forms += [str(int(value)), f"{float(value):.1f}"]
    return forms


def has_number(text: str, template: str, *values: float) -> bool:
    for combo in _combos([number_forms(v) for v in values]):
        if re.search(re.escape(template.format(*combo)) + r"(?![\d.])", text):
            return True
    return False


def _combos(lists: list[list[str]]) -> Iterator[tuple[str, ...]]:
    if not lists:
        yield ()
        return
    for head in lists[0]:
        for rest in _combos(lists[1:]):
            yield (head, *rest)


# --- the layout the frontend looks for, and links that work where the page is shown -----------------------------

def test_every_node_has_a_page_in_english_and_chinese() -> None:
    assert len(source_node_ids()) >= 8
    missing = [str(p.relative_to(REPO)) for _, _, p in pages() if not p.is_file()]
    assert not missing, f"help pages missing: {missing}"
    for node_id, lang, path in pages():
        first = path.read_text(encoding="utf-8").splitlines()[0]
        assert first.startswith("# "), f"{path.relative_to(REPO)} does not open with a '# ' heading"
        assert f"`{node_id}`" in path.read_text(encoding="utf-8"), f"{path.name} ({lang}) never names `{node_id}`"


def test_no_page_or_folder_without_its_node() -> None:
    ids = source_node_ids()
    for entry in DOCS.iterdir():
        name = entry.stem if entry.is_file() else entry.name
        assert name in ids, f"web/docs/{entry.name} names no node of the pack"
        if entry.is_dir():
            files = sorted(f.name for f in entry.iterdir())
            # en.md would be asked for before <NodeId>.md by English users, and drift from it
            assert files == [f"{lang}.md" for lang in LANGS if lang != "en"], \
                f"web/docs/{entry.name} holds {files}; expected one page per language but English"


def test_links_resolve_where_the_page_is_shown() -> None:
    repo_url, anchors = repository_url(), readme_anchors()
    assert "the-nodes" in anchors and "memory-exact-at-full-size-on-the-gpus-people-own" in anchors
    for _, _, path in pages():
        text = path.read_text(encoding="utf-8")
        targets = re.findall(r"(!?)\[[^\]]*\]\(([^)\s]+)[^)]*\)", text)
        targets += [("!", t) for t in re.findall(r'<(?:img|video|source)[^>]*\ssrc="([^"]+)"', text)]
        targets += [("", t) for t in re.findall(r'<a[^>]*\shref="([^"]+)"', text)]
        where = path.relative_to(REPO)
        for image, target in targets:
            if target.startswith(repo_url):
                anchor = target[len(repo_url):]
                assert anchor.startswith("#") and anchor[1:] in anchors, \
                    f"{where}: {target} is no section of README.md (its sections: {sorted(anchors)})"
            elif re.match(r"[a-z]+:", target) or target.startswith("/"):
                raise AssertionError(f"{where}: {target}: link only the pack's README ({repo_url}#section)")
            elif image:  # the frontend fetches it from /extensions/<pack>/docs/<target>
                assert (DOCS / target).is_file(), f"{where}: image {target} is not in web/docs/"
            else:
                raise AssertionError(f"{where}: relative link {target}: the frontend leaves link targets as they "
                                     f"are, so it would resolve against the app's URL; use {repo_url}#section")


def test_pages_name_only_nodes_the_pack_has() -> None:
    """Node ids, and node titles in English or in the page's language (its headings open with the node's own)."""
    ids, names = source_node_ids(), source_display_names()
    for node_id, lang, path in pages():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(REPO)
        unknown = set(re.findall(r"\bStableVideo\w*", text)) - ids
        assert not unknown, f"{where} names node ids the pack lacks: {unknown}"
        local = {v["display_name"] for v in translations(lang).values() if "display_name" in v}
        titles = {bare(n) for n in names | local}
        for phrase in re.findall(TITLE, re.sub(r"\n\s*", " ", prose(text))):  # a title may wrap
            ok = phrase.startswith("Stable Video Diffusion") or any(t == phrase or t.startswith(phrase + " ")
                                                                    for t in titles)
            assert ok, f"{where} names a node '{phrase}' the pack lacks (its nodes: {sorted(titles)})"
        heading = text.splitlines()[0][2:]
        own = translations(lang).get(node_id, {}).get("display_name")
        assert any(heading.startswith(n) for n in ([own] if own else names)), \
            f"{where}: heading '{heading}' does not open with the node's title ({own or sorted(names)})"


def test_graphs_fit_the_side_panel() -> None:
    """The help opens in the node library's side panel, about 25 columns of code wide by default (1.27 at a
    1600-pixel window): a wider graph would scroll sideways."""
    for _, _, path in pages():
        blocks = re.findall(r"^```text\n(.*?)^```", path.read_text(encoding="utf-8"), flags=re.S | re.M)
        assert len(blocks) == 1, f"{path.relative_to(REPO)}: expected one ```text graph, found {len(blocks)}"
        wide = [line for line in blocks[0].splitlines() if width(line) > PANEL_COLUMNS]
        assert not wide, f"{path.relative_to(REPO)}: graph lines wider than {PANEL_COLUMNS} columns: {wide}"


def width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def test_readme_anchors_follow_github() -> None:
    assert slug("How our defaults differ from ComfyUI's own SVD nodes, and why") == \
        "how-our-defaults-differ-from-comfyuis-own-svd-nodes-and-why"
    assert slug("Few steps: AnimateLCM-SVD-xt") == "few-steps-animatelcm-svd-xt"


# --- against the live schemas (a ComfyUI checkout) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def schemas(request: pytest.FixtureRequest) -> dict[str, dict[str, Any]]:
    """Each pack node's /object_info entry, from the in-process host."""
    if not hostenv.HAVE_COMFY:
        pytest.skip(hostenv.SKIP_REASON)
    nodes = request.getfixturevalue("comfy_nodes")
    infos = {name: cls.GET_NODE_INFO_V1() for name, cls in nodes.NODE_CLASS_MAPPINGS.items()
             if getattr(cls, "RELATIVE_PYTHON_MODULE", None) == PACK_MODULE}
    assert infos, "the pack's nodes are not loaded"
    return infos


def inputs_of(info: dict[str, Any]) -> dict[str, tuple[Any, dict[str, Any], bool]]:
    out: dict[str, tuple[Any, dict[str, Any], bool]] = {}
    for kind in ("required", "optional"):
        for name, spec in info["input"].get(kind, {}).items():
            out[name] = (spec[0], spec[1] if len(spec) > 1 else {}, kind == "optional")
    return out


def test_the_pages_cover_exactly_the_nodes_loaded(schemas: dict[str, dict[str, Any]]) -> None:
    assert set(schemas) == source_node_ids()


@pytest.mark.parametrize("lang", LANGS)
def test_every_input_is_listed_with_its_type_default_and_range(schemas: dict[str, dict[str, Any]],
                                                              lang: str) -> None:
    for node_id, info in sorted(schemas.items()):
        path = page_path(node_id, lang)
        where = path.relative_to(REPO)
        spec = inputs_of(info)
        labels = {k: v.get("name") for k, v in translations(lang).get(node_id, {}).get("inputs", {}).items()}
        listed: dict[str, str] = {}
        for item in bullets(section(path.read_text(encoding="utf-8"), INPUTS[lang])):
            names, label, head = bullet_names(item)
            for n in names:
                assert n not in listed, f"{where}: `{n}` listed twice"
                listed[n] = head
                want = labels.get(n) if labels.get(n) not in (None, n) else ""
                assert label == want or len(names) > 1, f"{where}: `{n}` is shown as '{want}', the page says '{label}'"
        assert set(listed) == set(spec), (f"{where}: inputs listed {sorted(listed)}, the node has {sorted(spec)}: "
                                          f"missing {sorted(set(spec) - set(listed))}, "
                                          f"unknown {sorted(set(listed) - set(spec))}")
        for name, (kind, opts, optional) in spec.items():
            head, what = listed[name], f"{where}: `{name}`"
            assert (OPTIONAL[lang] in head) == optional, f"{what}: optional is {optional}, the page says '{head}'"
            kind = "COMBO" if isinstance(kind, list) else kind
            if kind not in ("COMBO", "BOOLEAN"):
                assert kind in head, f"{what} is {kind}, the page says '{head}'"
            if kind in ("INT", "FLOAT"):
                assert has_number(head, DEFAULT[lang], opts["default"]), f"{what}: default {opts['default']} " \
                                                                         f"not in '{head}'"
                assert has_number(head, RANGE[lang], opts["min"], opts["max"]), \
                    f"{what}: range {opts['min']} to {opts['max']} not in '{head}'"
            elif kind == "BOOLEAN":
                assert ON_OFF[lang][bool(opts["default"])] in head, f"{what}: default {opts['default']} not in '{head}'"
            elif kind == "STRING":
                want = EMPTY[lang] if opts["default"] == "" else DEFAULT[lang].format(f"`{opts['default']}`")
                assert want in head, f"{what}: default {opts['default']!r} not in '{head}'"
            elif kind == "COMBO" and "default" in opts:
                assert DEFAULT[lang].format(f"`{opts['default']}`") in head, f"{what}: default not in '{head}'"
                fixed = [o for o in opts["options"] if "." not in o]  # not the files of a models folder
                absent = [o for o in fixed if f"`{o}`" not in head]
                assert not absent, f"{what}: choices {absent} not in '{head}'"


@pytest.mark.parametrize("lang", LANGS)
def test_every_output_is_listed_with_its_type(schemas: dict[str, dict[str, Any]], lang: str) -> None:
    for node_id, info in sorted(schemas.items()):
        path = page_path(node_id, lang)
        listed = [bullet_names(item) for item in bullets(section(path.read_text(encoding="utf-8"), OUTPUTS[lang]))]
        assert [names for names, _, _ in listed] == [[n] for n in info["output_name"]], \
            f"{path.relative_to(REPO)}: outputs {listed}, the node has {info['output_name']}"
        shown = translations(lang).get(node_id, {}).get("outputs", {})
        for i, ((_, label, _), n) in enumerate(zip(listed, info["output_name"], strict=True)):
            want = shown.get(str(i), {}).get("name")
            want = want if want not in (None, n) else ""
            assert label == want, f"{path.relative_to(REPO)}: output `{n}` is shown as '{want}', the page: '{label}'"
        for (_, _, head), kind in zip(listed, info["output"], strict=True):
            assert head.split()[0].rstrip(",，") == kind, \
                f"{path.relative_to(REPO)}: output type {kind}, the page says '{head}'"


def test_code_spans_name_only_what_the_pack_has(schemas: dict[str, dict[str, Any]]) -> None:
    """Every identifier-like code span (`steps`, `lcm`, `sv3d_p`) is an input, output or choice of a pack node, a
    preset, a template or one of the reference's names the pages quote."""
    import svd_core

    templates = {p.stem for p in (REPO / "example_workflows").glob("*.json") if p.name != "index.json"}
    known = set(svd_core.PRESETS) | templates | {"image_frame_ratio"}
    for info in schemas.values():
        known |= set(info["output_name"])
        for name, (kind, opts, _) in inputs_of(info).items():
            known.add(name)
            known |= set(opts.get("options", kind if isinstance(kind, list) else []))
    for _, _, path in pages():
        spans = set(re.findall(r"`([a-z][a-z0-9_]*)`", prose(path.read_text(encoding="utf-8"))))
        assert not spans - known, f"{path.relative_to(REPO)} names {sorted(spans - known)}, which the pack lacks"
