"""nodes/schema.py's two optional schema features on both kinds of host: the installed ComfyUI v0.3.64, whose
comfy_api has neither `io.Schema.search_aliases` nor inputs' `advanced=`, and a newer comfy_api (as ComfyUI's
comfy_api/latest/_io.py has them since: a `search_aliases: list[str]` dataclass field and an `advanced: bool`
parameter on every Input), stubbed here by subclassing v0.3.64's classes. Every node of the pack builds its
schema on both; on the newer one every node carries the shared aliases and exactly the expert inputs are advanced.
"""
from __future__ import annotations

import dataclasses
import sys
from types import ModuleType
from typing import Any

import pytest

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host

# the inputs hidden behind "Advanced" wherever a pack node has them (issue 19: sigma_min, sigma_max, rho, cond_aug
# and the decode chunk); every other input stays in view
EXPERT = {"sigma_min", "sigma_max", "rho", "cond_aug", "frames_per_chunk"}
WIDGET_CLASSES = ("Int", "Float", "Combo", "Boolean", "String")


@pytest.fixture(scope="module")
def pack_nodes(comfy_nodes: Any) -> dict[str, Any]:
    nodes = {k: v for k, v in comfy_nodes.NODE_CLASS_MAPPINGS.items() if k.startswith("StableVideo")}
    assert len(nodes) >= 8, sorted(nodes)
    return nodes


@pytest.fixture(scope="module")
def schema(pack_nodes: dict[str, Any]) -> ModuleType:
    """The pack's nodes/schema.py as ComfyUI's loader imported it (under the pack's folder path)."""
    module = sys.modules[pack_nodes["StableVideoSampler"].__module__]
    return module.schema  # type: ignore[no-any-return]


@pytest.fixture
def newer_io(monkeypatch: pytest.MonkeyPatch) -> Any:
    """comfy_api's io with a newer ComfyUI's two features, for the length of one test."""
    from comfy_api.latest import io

    @dataclasses.dataclass
    class NewerSchema(io.Schema):  # type: ignore[misc]
        search_aliases: list[str] = dataclasses.field(default_factory=list)

    def newer_input(base: type) -> type:
        class NewerInput(base):  # type: ignore[misc,valid-type]
            def __init__(self, *args: Any, advanced: bool | None = None, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.advanced = advanced
        return NewerInput

    monkeypatch.setattr(io, "Schema", NewerSchema)
    for name in WIDGET_CLASSES:
        kind = getattr(io, name)
        monkeypatch.setattr(kind, "Input", newer_input(kind.Input))
    return io


def test_v0_3_64_has_neither_feature_and_gets_neither(schema: ModuleType, pack_nodes: dict[str, Any]) -> None:
    from comfy_api.latest import io

    assert not schema.takes_search_aliases(io.Schema)
    assert not any(schema.takes_advanced(getattr(io, n).Input) for n in WIDGET_CLASSES)
    assert schema.aliases("svd sampler") == {} and schema.advanced(io.Float.Input) == {}
    for node_id, cls in pack_nodes.items():
        built = cls.define_schema()
        assert built.node_id == node_id and not hasattr(built, "search_aliases")
        assert not any(hasattr(i, "advanced") for i in built.inputs), node_id
        built.finalize()
        info = dataclasses.asdict(built.get_v1_info(cls))
        assert "search_aliases" not in info
        specs = [spec for group in info["input"].values() for spec in group.values()]
        assert not any(isinstance(s, tuple | list) and len(s) > 1 and "advanced" in s[1] for s in specs), node_id


def test_a_newer_comfy_api_gets_aliases_and_advanced_inputs(schema: ModuleType, pack_nodes: dict[str, Any],
                                                            newer_io: Any) -> None:
    assert schema.takes_search_aliases(newer_io.Schema)
    assert schema.takes_advanced(newer_io.Int.Input) and schema.takes_advanced(newer_io.Float.Input)
    assert schema.advanced(newer_io.Int.Input) == {"advanced": True}
    for node_id, cls in pack_nodes.items():
        built = cls.define_schema()
        assert isinstance(built, newer_io.Schema), f"{node_id}: define_schema does not build io.Schema"
        words = built.search_aliases
        assert set(schema.SEARCH_ALIASES) <= set(words), f"{node_id}: search_aliases {words}"
        assert {"svd", "img2vid", "image to video", "stable video"} <= set(words)
        assert len(words) == len(set(words)) and all(w == w.lower() for w in words), words
        marked = {i.id for i in built.inputs if getattr(i, "advanced", None)}
        assert marked == EXPERT & {i.id for i in built.inputs}, f"{node_id}: advanced inputs {marked}"


def test_the_extra_aliases_follow_the_shared_ones_once(schema: ModuleType, newer_io: Any) -> None:
    assert schema.aliases("sv3d", "svd", "orbit") == {"search_aliases": [*schema.SEARCH_ALIASES, "sv3d", "orbit"]}


def test_widgets_are_the_same_on_both_hosts_but_for_the_marking(schema: ModuleType, pack_nodes: dict[str, Any],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def described(cls: Any) -> list[tuple[str, str, Any]]:
        built = cls.define_schema()
        return [(i.id, i.get_io_type(), {k: v for k, v in i.as_dict().items() if k != "advanced"})
                for i in built.inputs]

    before = {k: described(v) for k, v in pack_nodes.items()}
    from comfy_api.latest import io

    for name in WIDGET_CLASSES:
        kind = getattr(io, name)

        class Newer(kind.Input):  # type: ignore[misc,name-defined]
            def __init__(self, *args: Any, advanced: bool | None = None, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.advanced = advanced

            def as_dict(self) -> dict[str, Any]:
                return {**super().as_dict(), **({"advanced": True} if self.advanced else {})}

        monkeypatch.setattr(kind, "Input", Newer)
    after = {k: described(v) for k, v in pack_nodes.items()}
    assert after == before
