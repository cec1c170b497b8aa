"""Registry-ready packaging: pyproject's [tool.comfy], requirements.txt, .comfyignore."""
from __future__ import annotations

import re
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def test_tool_comfy_declares_icon_comfyui_version_and_platforms() -> None:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())
    comfy = cfg["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"]
    assert comfy["Icon"].startswith("https://") and comfy["Icon"].endswith("icon.svg")
    assert (REPO / "icon.svg").is_file()
    assert re.fullmatch(r">=\d+\.\d+\.\d+", comfy["requires-comfyui"])
    classifiers = cfg["project"]["classifiers"]
    assert any(c.startswith("Operating System :: ") for c in classifiers)
    assert any(c.startswith("Environment :: GPU :: ") for c in classifiers)


def test_requirements_are_the_unpinned_runtime_dependencies_without_torch() -> None:
    lines = [ln.strip() for ln in (REPO / "requirements.txt").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("#")]
    assert reqs and all(re.fullmatch(r"[A-Za-z0-9_.-]+", r) for r in reqs), reqs  # no pins
    assert not {"torch", "torchvision", "torchaudio", "av"} & {r.lower() for r in reqs}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(re.split(r"[<>=!~]", d)[0] for d in declared) == sorted(reqs)


def test_comfyignore_keeps_tests_and_bench_out_of_the_archive() -> None:
    patterns = [ln.strip() for ln in (REPO / ".comfyignore").read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]
    for folder in ("tests/", "bench/", ".ci/"):
        assert folder in patterns
    assert not any(p.startswith(("svd_core", "nodes", "example_workflows")) for p in patterns)
