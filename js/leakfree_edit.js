// LeakFreeEdit web extension: live edit-list feedback, mask inputs that grow as you connect them, and the pack's cards
// in the template browser (ordered, titled, described: templates.js).
import { api } from "../../scripts/api.js";
import { app } from "../../scripts/app.js";
import { parseEdits, summary } from "./edit_list.js";
import { installTemplateBrowser } from "./templates.js";

const ENCODERS = new Set(["LeakFreeObjectRestrictedEncode", "LeakFreeObjectRestrictedEncodeFlux"]);
const PAINTED_MASKS = "LeakFreeObjectMasksPainted";
const MASK_INPUT = /^mask_(\d+)$/;
export const STATUS_WIDGET = "edit_summary";
const STATUS_HEIGHT = 20;
const STATUS_MARGIN = 15; // the inset of the frontend's own widgets

export function fitText(text, width, measure) {
  if (measure(text) <= width) return text;
  while (text.length > 1 && measure(text + "…") > width) text = text.slice(0, -1);
  return text + "…";
}

export function statusLine(node) {
  // One line under the edit list, drawn on the canvas: how many objects were read, or which line is malformed.
  // Not a value of the node: serialize false keeps it out of the saved workflow and out of the prompt.
  return {
    name: STATUS_WIDGET,
    type: "leakfree_status",
    value: "",
    shown: "",
    serialize: false,
    options: { serialize: false },
    computeSize: (width) => [width, STATUS_HEIGHT],
    refresh() {
      const edits = node.widgets?.find((w) => w.name === "edits");
      const linked = node.inputs?.some((i) => i.widget?.name === "edits" && i.link != null);
      this.parsed = edits && !linked ? parseEdits(String(edits.value ?? "")) : null;
      this.value = this.parsed ? summary(this.parsed) : "";
      return this.parsed;
    },
    draw(ctx, _node, width, y) {
      const parsed = this.refresh();
      if (!parsed) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      ctx.textBaseline = "middle";
      ctx.fillStyle = parsed.error ? "#f77" : "#8c8";
      this.shown = fitText(this.value, width - 2 * STATUS_MARGIN, (s) => ctx.measureText(s).width);
      ctx.fillText(this.shown, STATUS_MARGIN, y + STATUS_HEIGHT / 2);
      ctx.restore();
    },
  };
}

function showEditSummary(nodeType) {
  const onNodeCreated = nodeType.prototype.onNodeCreated;
  nodeType.prototype.onNodeCreated = function () {
    const result = onNodeCreated?.apply(this, arguments);
    const node = this;
    const status = this.addCustomWidget(statusLine(this));
    status.refresh();
    const edits = this.widgets.find((w) => w.name === "edits");
    if (edits) {
      const callback = edits.callback;
      edits.callback = function () {
        const answer = callback?.apply(this, arguments);
        status.refresh(); // typing in the text box: redraw the line now, not at the next mouse move
        node.setDirtyCanvas?.(true, false);
        return answer;
      };
    }
    return result;
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

// The pack's folder as ComfyUI serves it (/extensions/<folder>/leakfree_edit.js): the template index names it so.
const PACK = decodeURIComponent(new URL(import.meta.url).pathname.split("/").at(-2));

app.registerExtension({
  name: "LeakFreeEdit.UI",
  setup() {
    installTemplateBrowser(api, PACK, async () => (await fetch(new URL("./templates.json", import.meta.url))).json());
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (ENCODERS.has(nodeData.name)) showEditSummary(nodeType);
    if (nodeData.name === PAINTED_MASKS) growMaskInputs(nodeType);
  },
});
