// The web extension's logic on stand-in nodes: the edit-list status line and the growing mask inputs.
// (tests/browser/test_browser.py checks the same in the real frontend.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { register } from "node:module";

// leakfree_edit.js imports the frontend's `app` and `api` from ../../scripts/, which only the ComfyUI server serves:
// resolve them to stand-ins (the app keeps the registered extension).
register(
  "data:text/javascript," +
    encodeURIComponent(`
      const APP = "export const app = { registerExtension(e) { (globalThis.leakfreeExtensions ??= []).push(e); } };";
      const API = "export const api = {};";
      export async function resolve(specifier, context, next) {
        if (specifier.endsWith("/scripts/app.js")) return { url: "data:text/javascript," + encodeURIComponent(APP), shortCircuit: true };
        if (specifier.endsWith("/scripts/api.js")) return { url: "data:text/javascript," + encodeURIComponent(API), shortCircuit: true };
        return next(specifier, context);
      }`),
);
const { fitText, statusLine, STATUS_WIDGET } = await import("../../../js/leakfree_edit.js");
const [extension] = globalThis.leakfreeExtensions;

const width = (s) => 6 * [...s].length; // a 6 px per character font

function recordingContext() {
  const drawn = [];
  return { drawn, save() {}, restore() {}, measureText: (s) => ({ width: width(s) }), fillText: (s) => drawn.push(s) };
}

function encodeNode(text) {
  return { widgets: [{ name: "edits", value: text }, { name: "eos_mode", value: "object" }], inputs: [{ name: "clip", link: 1 }] };
}

test("fitText keeps text that fits and cuts the rest with an ellipsis", () => {
  assert.equal(fitText("2 objects: wolf, moon", 1000, width), "2 objects: wolf, moon");
  const cut = fitText("2 objects: wolf, moon", 60, width);
  assert.ok(cut.endsWith("…") && width(cut) <= 60, cut);
});

test("the status line names the malformed line, then the objects, in full at the node's width", () => {
  const node = encodeNode("wolf -> goat\nmoon is gold");
  const line = statusLine(node);
  assert.equal(line.name, STATUS_WIDGET);
  assert.equal(line.serialize, false); // not saved in widgets_values
  assert.equal(line.options.serialize, false); // not sent in the prompt
  line.refresh();
  assert.equal(line.value, "⚠ line 2: no '->' (write 'source -> target')");
  const ctx = recordingContext();
  line.draw(ctx, node, 360, 100);
  assert.deepEqual(ctx.drawn, [line.value]);
  assert.equal(ctx.fillStyle, "#f77");

  node.widgets[0].value = "wolf -> goat\nmoon -> gold";
  const ok = recordingContext();
  line.draw(ok, node, 360, 100);
  assert.deepEqual(ok.drawn, ["2 objects: wolf, moon"]);
  assert.equal(line.shown, line.value);
  assert.equal(ok.fillStyle, "#8c8");
});

test("the status line says nothing when the edit list comes from a link", () => {
  const node = encodeNode("");
  node.inputs.push({ name: "edits", widget: { name: "edits" }, link: 7 });
  const line = statusLine(node);
  const ctx = recordingContext();
  line.draw(ctx, node, 360, 100);
  assert.equal(line.value, "");
  assert.deepEqual(ctx.drawn, []);
});

test("Object-Restricted Encode gets the status line, and typing refreshes it", async () => {
  function NodeType() {}
  NodeType.prototype.addCustomWidget = function (w) {
    this.widgets.push(w);
    return w;
  };
  NodeType.prototype.setDirtyCanvas = function () {
    this.dirty = true;
  };
  await extension.beforeRegisterNodeDef(NodeType, { name: "LeakFreeObjectRestrictedEncode" });
  const node = Object.assign(new NodeType(), encodeNode("wolf -> goat"));
  node.onNodeCreated();
  const line = node.widgets.find((w) => w.name === STATUS_WIDGET);
  assert.equal(line.value, "1 object: wolf");
  node.widgets[0].value = "wolf goat";
  node.widgets[0].callback("wolf goat"); // what the text box does on every input event
  assert.equal(line.value, "⚠ line 1: no '->' (write 'source -> target')");
  assert.ok(node.dirty);
});

function masksNode() {
  function NodeType() {}
  NodeType.prototype.addInput = function (name, type) {
    this.inputs.push({ name, type, link: null });
  };
  NodeType.prototype.removeInput = function (k) {
    this.inputs.splice(k, 1);
  };
  return NodeType;
}

test("Object Masks from Painted Masks keeps one free mask input after the last connected", async () => {
  const NodeType = masksNode();
  await extension.beforeRegisterNodeDef(NodeType, { name: "LeakFreeObjectMasksPainted" });
  const node = new NodeType();
  node.inputs = ["edit_plan", ...Array.from({ length: 8 }, (_, i) => `mask_${i + 1}`), "image"].map((name) => ({ name, link: null }));
  node.onNodeCreated();
  const masks = () => node.inputs.filter((i) => i.name.startsWith("mask_")).map((i) => `${i.name}${i.link == null ? "" : "*"}`);
  assert.deepEqual(masks(), ["mask_1", "mask_2"]);
  let link = 1;
  for (let n = 1; n <= 8; n++) {
    node.inputs.find((i) => i.name === `mask_${n}`).link = link++;
    node.onConnectionsChange();
    const free = masks().filter((m) => !m.endsWith("*"));
    assert.deepEqual(free, n < 8 ? [`mask_${n + 1}`] : [], `after connecting mask_${n}`);
  }
  for (let n = 8; n >= 3; n--) node.inputs.find((i) => i.name === `mask_${n}`).link = null;
  node.onConnectionsChange();
  assert.deepEqual(masks(), ["mask_1*", "mask_2*", "mask_3"]);
});
