"""Property-based tests of every node's input checks inside a real ComfyUI (hypothesis, in-process).

The image_to_video workflow at test size; one widget of one of the pack's nodes takes a random value
(NaN, infinities, negatives, huge numbers, and cheap valid ones). ComfyUI then either runs the whole
prompt (tiny model) or refuses it, at validation or when the node starts, with a message that names the
widget; never with a bare torch error from deep inside the work.
"""
from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import hostenv

if not hostenv.HAVE_COMFY:
    pytest.skip(hostenv.SKIP_REASON, allow_module_level=True)

pytestmark = pytest.mark.host


def _ints(valid: st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return st.one_of(valid, st.integers(-(10**15), 0), st.integers(10**4, 10**20))


def _floats(valid: st.SearchStrategy[float]) -> st.SearchStrategy[float]:
    return st.one_of(valid, st.floats(allow_nan=True, allow_infinity=True), st.just(float("nan")),
                     st.just(float("inf")), st.just(-float("inf")), st.floats(1e20, 1e300), st.floats(-1e300, -1e-300))


# (node id in the workflow, widget) -> values; valid ones are kept cheap (small sizes, few frames and steps)
WIDGETS: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("3", "width"): _ints(st.sampled_from([64, 128, 100, 65])),
    ("3", "height"): _ints(st.sampled_from([64, 128, 100, 65])),
    ("3", "fps"): _ints(st.integers(1, 1000)),
    ("3", "motion_bucket_id"): _ints(st.integers(0, 1023)),
    ("3", "cond_aug"): _floats(st.floats(0.0, 10.0)),
    ("3", "seed"): st.integers(-(10**25), 10**25),
    ("4", "width"): _ints(st.sampled_from([64, 128, 96])),
    ("4", "height"): _ints(st.sampled_from([64, 128, 96])),
    ("4", "frames"): _ints(st.integers(1, 3)),
    ("4", "batch_size"): _ints(st.integers(1, 2)),
    ("5", "steps"): _ints(st.integers(1, 2)),
    ("5", "min_cfg"): _floats(st.floats(0.0, 100.0)),
    ("5", "max_cfg"): _floats(st.floats(0.0, 100.0)),
    ("5", "sigma_min"): _floats(st.floats(1e-4, 100.0)),
    ("5", "sigma_max"): _floats(st.floats(0.01, 1e4)),
    ("5", "rho"): _floats(st.floats(0.1, 100.0)),
    ("5", "denoise"): _floats(st.floats(0.0, 1.0)),
    ("5", "seed"): st.integers(-(10**25), 10**25),
    ("6", "frames_per_chunk"): _ints(st.integers(0, 5)),
}


def _run(prompt: dict[str, Any]) -> tuple[Any, Any]:
    import execution

    pid = str(uuid.uuid4())
    valid = asyncio.run(execution.validate_prompt(pid, prompt, None))
    if not valid[0]:
        return valid, None
    executor = execution.PromptExecutor(hostenv.ServerStub(), cache_type=execution.CacheType.CLASSIC)
    executor.execute(prompt, pid, {"client_id": None}, valid[2])
    return valid, executor


@settings(max_examples=45, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_every_widget_value_runs_or_is_refused_naming_it(comfy_nodes: Any, assets: Path, data: st.DataObject) -> None:
    node, widget = data.draw(st.sampled_from(sorted(WIDGETS)), label="widget")
    value = data.draw(WIDGETS[(node, widget)], label="value")
    prompt, _ = hostenv.shrink(hostenv.load_api("image_to_video"), "fuzz")
    prompt[node]["inputs"][widget] = value
    valid, executor = _run(prompt)
    if not valid[0]:
        event("refused at validation")
        errors = valid[3].get(node, {}).get("errors", []) or [valid[1]]
        text = " ".join(f"{e.get('message', '')} {e.get('details', '')}" for e in errors)
        assert widget in text, (widget, value, errors)
        return
    if executor.success:
        event("ran")
        return
    failures = [d for ev, d in executor.status_messages if ev == "execution_error"]
    assert failures, executor.status_messages
    failure = failures[0]
    event("refused when the node started")
    message = str(failure.get("exception_message", ""))
    assert failure.get("exception_type") in ("ValueError", "builtins.ValueError"), failure
    # a width/height that differs between the conditioning and the latent is refused by the sampler, which
    # names both inputs; anything else is refused by the node that owns the widget, naming it
    assert widget in message, (node, widget, value, message)
