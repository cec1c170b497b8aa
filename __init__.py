"""ComfyUI registration of the pack's nodes (V3 `comfy_entrypoint`); nothing else lives here.

The host imports are inside the entry point so that importing this file without a host (pytest
collects the repository root as a package) does not fail.
"""
import importlib.util
import os
import sys

# ComfyUI imports this pack by its folder path, so the pack folder is not on sys.path and the
# top-level package `svd_core` next to this file would not be found. Append (never prepend: the
# host's own top-level `nodes` module must win) the pack folder when svd_core is not importable.
if importlib.util.find_spec("svd_core") is None:
    sys.path.append(os.path.dirname(os.path.abspath(__file__)))

# The frontend's files: node help pages (web/docs/<NodeId>.md, web/docs/<NodeId>/<lang>.md) and the small
# extension that grows the keyframe node's image inputs (web/js/).
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():  # -> comfy_api.latest.ComfyExtension
    from comfy_api.latest import ComfyExtension

    from .nodes.core_bridge import BRIDGE_NODES
    from .nodes.extend_node import EXTEND_NODES
    from .nodes.keyframe_sequence_node import KEYFRAME_NODES
    from .nodes.orbit_node import ORBIT_NODES
    from .nodes.svd_nodes import NODES

    class StableVideoExactExtension(ComfyExtension):
        async def get_node_list(self) -> list:
            return (list(NODES) + list(ORBIT_NODES) + list(EXTEND_NODES) + list(BRIDGE_NODES)
                    + list(KEYFRAME_NODES))

    return StableVideoExactExtension()
