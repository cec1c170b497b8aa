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


# The attribution notices the licences ask for, word for word (Stability-AI/generative-models model_licenses:
# LICENSE-SV3D section 2.c, which SVD-XT 1.1's licence shares, and LICENSE-SVD section 2.b).
ATTRIBUTIONS = {
    ("svd_xt_1_1", "sv3d_u", "sv3d_p"): "This Stability AI Model is licensed under the Stability AI Non-Commercial "
                                        "Research Community License, Copyright (c) Stability AI Ltd. All Rights "
                                        "Reserved.",
    ("svd", "svd_xt", "svd_image_decoder", "svd_xt_image_decoder"): "Stable Video Diffusion is licensed under the "
                                                                     "Stable Video Diffusion Research License, "
                                                                     "Copyright (c) Stability AI Ltd. All Rights "
                                                                     "Reserved.",
}


def test_notice_carries_every_family_members_attribution_word_for_word() -> None:
    from svd_core.config import PRESETS

    notice = " ".join((REPO / "NOTICE").read_text().split())  # line breaks and indentation are not words
    for files, text in ATTRIBUTIONS.items():
        assert text in notice, text
        for name in files:
            assert f"{name}.safetensors" in notice, name
    covered = {name for files in ATTRIBUTIONS for name in files}
    assert set(PRESETS) - covered == {"animatelcm_svd_xt"}, "every preset's file has its licence's notice"
