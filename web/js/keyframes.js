// The keyframe-sequence node grows: of its optional inputs keyframe_3 ... keyframe_16 it shows those up to the
// last connected one, plus one empty slot (keyframe_1 and keyframe_2 are always there). Connecting the empty slot
// adds the next; disconnecting the last ones removes the empty slots behind them. The prompt only ever names
// connected inputs, so a saved workflow and its API form do not depend on this file.
import { app } from "../../../scripts/app.js";  // served at /extensions/comfyui-svd-exact/js/

const NODE = "StableVideoKeyframeSequence";
const MAX_KEYFRAMES = 16;
const FIRST_OPTIONAL = 3;
const NAME = /^keyframe_(\d+)$/;

function number(input) {
  const m = NAME.exec(input?.name ?? "");
  return m ? Number(m[1]) : 0;
}

// keyframe_3 .. keyframe_{last connected + 1} (at most 16), the others removed; empty slots beyond are dropped
function fit(node) {
  if (node.__svdFitting || !node.inputs) return;
  node.__svdFitting = true;
  try {
    const connected = node.inputs.filter((i) => number(i) && i.link != null).map(number);
    const want = Math.min(MAX_KEYFRAMES, Math.max(FIRST_OPTIONAL - 1, ...connected) + 1);
    // a removed slot's look (shape, translated name) is kept for when it comes back
    const spare = (node.__svdSpare ??= {});
    let removed = false;
    for (let slot = node.inputs.length - 1; slot >= 0; slot--) {
      const input = node.inputs[slot];
      if (number(input) > want && input.link == null) {
        spare[number(input)] = { shape: input.shape, localized_name: input.localized_name, label: input.label };
        node.removeInput(slot);
        removed = true;
      }
    }
    for (let k = FIRST_OPTIONAL; k <= want; k++) {
      if (!node.inputs.some((i) => number(i) === k)) {  // addInput makes the node tall enough
        node.addInput(`keyframe_${k}`, "IMAGE", spare[k]);
      }
    }
    if (removed) node.setSize([node.size[0], node.computeSize()[1]]);
  } finally {
    node.__svdFitting = false;
  }
}

app.registerExtension({
  name: "comfyui-svd-exact.keyframes",
  nodeCreated(node) {
    if (node.comfyClass !== NODE) return;
    fit(node);  // a new node: keyframe_1, keyframe_2 and one empty keyframe_3
    const configure = node.configure;
    node.configure = function (data) {  // a loaded node: its slots settle once all its links are in
      this.__svdFitting = true;
      try {
        return configure.call(this, data);
      } finally {
        this.__svdFitting = false;
        fit(this);
      }
    };
    const changed = node.onConnectionsChange;
    node.onConnectionsChange = function (type, slot, connected, link, input) {
      const result = changed?.apply(this, arguments);
      if (type === LiteGraph.INPUT && number(input)) fit(this);
      return result;
    };
  },
});
