// LeakFreeEdit web extension: live edit-list feedback and mask inputs that grow as you connect them.
import { app } from "../../scripts/app.js";
import { parseEdits, summary } from "./edit_list.js";

const ENCODE = "LeakFreeObjectRestrictedEncode";
const PAINTED_MASKS = "LeakFreeObjectMasksPainted";
const MASK_INPUT = /^mask_(\d+)$/;

function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  while (text.length > 1 && ctx.measureText(text + "…").width > width) text = text.slice(0, -1);
  return text + "…";
}

function showEditSummary(nodeType) {
  // In the title bar, right-aligned: how many objects were read, or which line is malformed.
  const onDrawForeground = nodeType.prototype.onDrawForeground;
  nodeType.prototype.onDrawForeground = function (ctx) {
    onDrawForeground?.apply(this, arguments);
    const edits = this.widgets?.find((w) => w.name === "edits");
    if (!edits || this.flags?.collapsed) return;
    const parsed = parseEdits(String(edits.value ?? ""));
    ctx.save();
    ctx.font = "12px sans-serif";
    const titleWidth = ctx.measureText(this.getTitle?.() ?? this.title ?? "").width * 1.25 + 40;
    ctx.textAlign = "right";
    ctx.fillStyle = parsed.error ? "#f77" : "#8c8";
    ctx.fillText(fitText(ctx, summary(parsed), this.size[0] - titleWidth), this.size[0] - 8, -9);
    ctx.restore();
  };
}

function growMaskInputs(nodeType) {
  // Keep every connected mask input plus exactly one free one after the last connected.
  const tidy = function () {
    const masks = (this.inputs ?? []).filter((i) => MASK_INPUT.test(i.name));
    const lastUsed = masks.reduce((n, i) => (i.link != null ? Math.max(n, +i.name.match(MASK_INPUT)[1]) : n), 1);
    for (let k = this.inputs.length - 1; k >= 0; k--) {
      const match = this.inputs[k].name.match(MASK_INPUT);
      if (match && +match[1] > lastUsed + 1 && this.inputs[k].link == null) this.removeInput(k);
    }
    const names = new Set(this.inputs.map((i) => i.name));
    if (!names.has(`mask_${lastUsed + 1}`) && lastUsed < 8) this.addInput(`mask_${lastUsed + 1}`, "MASK");
  };
  const onConnectionsChange = nodeType.prototype.onConnectionsChange;
  nodeType.prototype.onConnectionsChange = function () {
    onConnectionsChange?.apply(this, arguments);
    tidy.call(this);
  };
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    onNodeCreated?.apply(this, arguments);
    tidy.call(this);
  };
}

app.registerExtension({
  name: "LeakFreeEdit.UI",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name === ENCODE) showEditSummary(nodeType);
    if (nodeData.name === PAINTED_MASKS) growMaskInputs(nodeType);
  },
});
