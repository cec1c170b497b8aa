"""`python -m svd_core generate` end to end on a random-weight file: it writes a playable video."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from svd_core import SVDConfig, save_random_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    ckpt = save_random_checkpoint(d / "svd_xt_1_1.safetensors", SVDConfig.tiny(), seed=5)
    y, x = np.mgrid[0:90, 0:120]
    rgb = np.stack([x * 2 % 256, y * 2 % 256, (x + y) % 256], axis=-1).astype(np.uint8)
    img = d / "input.png"
    Image.fromarray(rgb).save(img)  # 120x90: not the output size, so it is cropped and resized
    return ckpt, img, d


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "svd_core", "generate", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


# WebP by default; GIF and MP4 (PyAV) under -m slow (the default suite's budget)
@pytest.mark.parametrize("suffix", [".webp", pytest.param(".gif", marks=pytest.mark.slow),
                                    pytest.param(".mp4", marks=pytest.mark.slow)])
def test_generate_writes_a_playable_video(inputs, suffix):
    ckpt, img, d = inputs
    out = d / f"out{suffix}"
    r = _run("--checkpoint", str(ckpt), "--image", str(img), "--output", str(out), "--width", "64", "--height",
             "64", "--frames", "3", "--steps", "2", "--seed", "1", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.stat().st_size > 0
    assert "sampling [" in r.stderr and "2/2" in r.stderr  # the progress bar
    if suffix == ".mp4":
        av = pytest.importorskip("av")
        with av.open(str(out)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    else:
        with Image.open(out) as im:
            assert im.n_frames == 3 and im.size == (64, 64)


def test_missing_checkpoint_says_where_to_get_it(inputs):
    _, img, d = inputs
    r = _run("--checkpoint", str(d / "svd_xt_1_1_missing.safetensors"), "--image", str(img),
             "--output", str(d / "x.webp"))
    assert r.returncode == 2
    assert "stabilityai/stable-video-diffusion-img2vid-xt-1-1" in r.stderr and "models/checkpoints" in r.stderr


def test_bad_size_is_refused(inputs):
    ckpt, img, d = inputs
    r = _run("--checkpoint", str(ckpt), "--image", str(img), "--output", str(d / "x.webp"), "--width", "100")
    assert r.returncode == 2 and "--width must be a positive multiple of 64" in r.stderr


def test_decode_chunk_below_one_is_refused_and_above_the_frames_clamped(inputs):
    ckpt, img, d = inputs
    common = ("--checkpoint", str(ckpt), "--image", str(img), "--width", "64", "--height", "64", "--frames", "3",
              "--steps", "1", "--device", "cpu")
    r = _run(*common, "--output", str(d / "c0.webp"), "--decode-chunk-size", "0")
    assert r.returncode == 2 and "--decode-chunk-size" in r.stderr and not (d / "c0.webp").exists()
    r = _run(*common, "--output", str(d / "c9.webp"), "--decode-chunk-size", "9")
    assert r.returncode == 0, r.stderr
    assert "decode_chunk_size 9 is larger than the video's 3 frames" in r.stderr


def test_cli_video_is_generates_video_for_its_seed(inputs):
    """The command line gives, frame for frame, what svd_core.generate gives for the same image and seed
    (an animated PNG keeps every frame losslessly, rounded to 8 bits)."""
    import torch

    from svd_core import generate, load_models
    from svd_core.app.render import load_image
    from svd_core.image_ops import fit_image

    ckpt, img, d = inputs
    out = d / "seeded.png"
    r = _run("--checkpoint", str(ckpt), "--image", str(img), "--output", str(out), "--width", "64", "--height",
             "64", "--frames", "3", "--steps", "2", "--seed", "7", "--device", "cpu", "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    models = load_models(ckpt, dtype=torch.float32, vae_dtype=torch.float32)
    video = generate(models, fit_image(load_image(img), 64, 64, "crop"), num_frames=3, num_steps=2, seed=7)[0]
    expected = (video.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    with Image.open(out) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
    assert len(frames) == 3
    assert max(int(np.abs(f.astype(int) - e.astype(int)).max()) for f, e in zip(frames, expected, strict=True)) <= 1


def test_end_image_and_loop_from_the_command_line(inputs):
    ckpt, img, d = inputs
    common = ("--checkpoint", str(ckpt), "--image", str(img), "--width", "64", "--height", "64", "--frames", "4",
              "--steps", "1", "--device", "cpu")
    r = _run(*common, "--output", str(d / "kf.png"), "--end-image", str(img))
    assert r.returncode == 0, r.stderr
    r = _run(*common, "--output", str(d / "loop.png"), "--loop")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr and "(3 frames)" in r.stderr  # the repeated first frame is dropped
    r = _run(*common, "--output", str(d / "both.png"), "--loop", "--end-image", str(img))
    assert r.returncode == 2 and "--end-image and --loop" in r.stderr


def test_an_orbit_from_the_command_line_follows_its_camera_and_refuses_bad_paths(inputs, caplog):
    _, _, d = inputs
    ckpt = save_random_checkpoint(d / "sv3d_p.safetensors", SVDConfig.tiny("sv3d_p"), seed=6)
    rgba = np.zeros((90, 120, 4), dtype=np.uint8)
    rgba[20:60, 70:110] = (200, 40, 90, 255)  # an object on transparency, off-centre
    obj = d / "object.png"
    Image.fromarray(rgba).save(obj)
    out = d / "orbit.png"
    common = ("--checkpoint", str(ckpt), "--image", str(obj), "--output", str(out), "--width", "64", "--height",
              "64", "--frames", "3", "--steps", "2", "--device", "cpu")
    r = _run(*common, "--elevations-deg", "0", "15", "30", "--azimuths-deg", "120", "240", "0")
    assert r.returncode == 0, r.stderr
    with Image.open(out) as im:
        assert im.n_frames == 3
        im.seek(2)
        last = np.asarray(im.convert("RGB"))
    assert (last[0, 0] == 255).all(), "the last frame is the prepared input: the object centred on white"
    # the refusals in-process (the same main() the subprocess runs), each before any sampling
    import svd_core.app.cli as cli

    bad = [(("--azimuths-deg", "0", "90"), "--azimuths-deg has 2 values; give 3"),
           (("--elevations-deg", "100"), "--elevations-deg must lie in [-90, 90]"),
           (("--elevations-deg", "nan"), "--elevations-deg must be finite")]
    svd_ckpt = d / "svd_xt_1_1.safetensors"
    bad.append((("--checkpoint", str(svd_ckpt), "--elevations-deg", "10"),
                "--elevations-deg / --azimuths-deg: the loaded model (svd_xt_1_1"))
    bad += [(("--device", "gpu0"), "--device is 'gpu0', which is not a device"),  # refused before loading
            (("--device", "cuda:7"), "--device 'cuda:7': this machine has ")]
    for extra, message in bad:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="svd_core"):
            assert cli.main(["generate", *common, *extra]) != 0
        assert any(message in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


def _keyframe_files(d: Path) -> list[Path]:
    """Three keyframe images of different sizes (each fitted to --width x --height like --image)."""
    paths = []
    for k, (w, h) in enumerate(((120, 90), (64, 64), (80, 100))):
        rgb = np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)
        paths.append(d / f"key{k}.png")
        Image.fromarray(rgb).save(paths[-1])
    return paths


def test_keyframes_from_the_command_line_are_generate_keyframes_video(inputs):
    """--keyframes a b c --segment-frames 3,2 writes, frame for frame, what svd_core.generate_keyframes gives for
    the fitted images (an animated PNG: 8-bit rounding only)."""
    import torch

    from svd_core import generate_keyframes, load_models
    from svd_core.app.render import load_image
    from svd_core.image_ops import fit_image

    ckpt, _, d = inputs
    keys = _keyframe_files(d)
    out = d / "keyframes.png"
    r = _run("--checkpoint", str(ckpt), "--keyframes", *map(str, keys), "--segment-frames", "3,2", "--output",
             str(out), "--width", "64", "--height", "64", "--steps", "1", "--seed", "4", "--device", "cpu",
             "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    assert "(4 frames)" in r.stderr and "2/2" in r.stderr  # 3 + 2 - 1 frames; the bar counts both segments' steps
    models = load_models(ckpt, dtype=torch.float32, vae_dtype=torch.float32)
    video = generate_keyframes(models, [fit_image(load_image(p), 64, 64, "crop") for p in keys],
                               segment_frames=[3, 2], num_steps=1, seed=4)[0]
    expected = (video.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    with Image.open(out) as im:
        frames = []
        for i in range(im.n_frames):
            im.seek(i)
            frames.append(np.asarray(im.convert("RGB")))
    assert len(frames) == 4
    assert max(int(np.abs(f.astype(int) - e.astype(int)).max()) for f, e in zip(frames, expected, strict=True)) <= 1


def test_bad_keyframe_options_are_refused_before_loading(inputs, caplog):
    import svd_core.app.cli as cli

    ckpt, img, d = inputs
    keys = [str(p) for p in _keyframe_files(d)]
    common = ("--checkpoint", str(d / "never_read.safetensors"), "--output", str(d / "kf_bad.webp"))
    bad = [(("--keyframes", keys[0]), "--keyframes needs at least 2 images, got 1"),
           (("--keyframes", keys[0], str(d / "missing.png")), f"--keyframes: image '{d / 'missing.png'}' does not"),
           (("--keyframes", *keys, "--segment-frames", "3"), "--segment-frames has 1 value(s) for 3 keyframes"),
           (("--keyframes", *keys, "--segment-frames", "3,1"), "--segment-frames, segment 2 (keyframe_2 to "
                                                             "keyframe_3), is 1 frames; a segment needs 2"),
           (("--keyframes", *keys, "--segment-frames", "3,x"), "--segment-frames: '3,x' is not a list of whole"),
           (("--keyframes", *keys, "--segment-frames", "3,3", "--frames", "3"), "--frames and --segment-frames"),
           (("--image", str(img), "--segment-frames", "3"), "--segment-frames goes with --keyframes"),
           (("--keyframes", *keys, "--end-image", str(img)), "--keyframes and --end-image exclude each other"),
           (("--keyframes", *keys, "--loop"), "--keyframes and --loop exclude each other"),
           (("--keyframes", *keys, "--frames", "1"), "--frames is 1 frames; a segment needs 2")]
    for extra, message in bad:
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="svd_core"):
            assert cli.main(["generate", *common, *extra]) == 2
        assert any(message in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]
        assert "not found" not in caplog.text  # refused before the checkpoint is even looked for
    with pytest.raises(SystemExit):  # argparse: one of --image and --keyframes, not both
        cli.parser().parse_args(["generate", *common, "--image", str(img), "--keyframes", *keys])
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="svd_core"):  # an orbit model: refused once it is loaded
        sv3d = save_random_checkpoint(d / "sv3d_u.safetensors", SVDConfig.tiny("sv3d_u"), seed=1)
        assert cli.main(["generate", "--checkpoint", str(sv3d), "--output", str(d / "kf_orbit.webp"),
                         "--keyframes", *keys, "--device", "cpu"]) == 2
    assert "--keyframes: the loaded model (sv3d_u) makes orbits" in caplog.text
