"""ComfyUI nodes of the pack. The host imports them through the package root's `comfy_entrypoint`;
`adapters` needs no host, `svd_nodes` imports ComfyUI."""
