// The template browser's order and card texts (js/templates.js) on js/templates.json, without a browser.
// (tests/browser/test_browser.py checks the cards in the real frontend.)
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

const { orderTemplates, describeCards, installTemplateBrowser } = await import("../../../js/templates.js");
const TEMPLATES = JSON.parse(readFileSync(new URL("../../../js/templates.json", import.meta.url)));

test("the recommended first template comes first, the others in templates.json's order, unknown ones last by name", () => {
  const listed = TEMPLATES.map((t) => t.name).reverse(); // as an unsorted directory listing might return them
  const ordered = orderTemplates(["zz_new", ...listed, "aa_new"], TEMPLATES);
  assert.equal(ordered[0], "edit_painted_masks_sd15");
  assert.deepEqual(ordered, [...TEMPLATES.map((t) => t.name), "aa_new", "zz_new"]);
});

function element(text) {
  return { textContent: text, title: text };
}

function card(name) {
  return { name, h3: element(name), p: element(name.replaceAll("_", " ")), querySelector(s) { return this[s]; } };
}

test("each of the pack's cards gets its title and description; other cards are left alone", () => {
  const cards = [card("edit_painted_masks_sd15"), card("someone_elses_template")];
  const root = { querySelector: (s) => cards.find((c) => s === `[data-testid="template-workflow-${c.name}"]`) ?? null };
  describeCards(root, TEMPLATES);
  const [ours, theirs] = cards;
  assert.equal(ours.h3.textContent, TEMPLATES[0].title);
  assert.equal(ours.h3.title, TEMPLATES[0].title);
  assert.equal(ours.p.textContent, TEMPLATES[0].description);
  assert.notEqual(ours.h3.textContent, ours.name);
  assert.equal(theirs.h3.textContent, "someone_elses_template");
});

test("the template index the frontend fetches has the pack's templates in order, other packs' untouched", async () => {
  globalThis.MutationObserver = class { observe() {} };
  globalThis.document = { body: {} };
  const listing = { "ComfyUI-LeakFreeEdit": ["edit_dpl_sd15", "edit_painted_masks_sd15"], "OtherPack": ["b", "a"] };
  const api = { getWorkflowTemplates: async () => structuredClone(listing) };
  installTemplateBrowser(api, "ComfyUI-LeakFreeEdit", async () => TEMPLATES);
  const index = await api.getWorkflowTemplates();
  assert.deepEqual(index["ComfyUI-LeakFreeEdit"], ["edit_painted_masks_sd15", "edit_dpl_sd15"]);
  assert.deepEqual(index.OtherPack, ["b", "a"]);
});
