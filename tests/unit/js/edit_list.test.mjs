// The web extension's edit-list parser agrees with attention/plan.py on the same inputs.
import { test } from "node:test";
import assert from "node:assert/strict";
import { parseEdits, summary } from "../../../js/edit_list.js";

test("reads one edit per line, skipping comments and blanks", () => {
  const parsed = parseEdits("# edits\n wolf -> brown-colored goat \n\nmoon → moon made of gold");
  assert.equal(parsed.error, null);
  assert.deepEqual(parsed.edits.map((e) => e.target), ["brown-colored goat", "moon made of gold"]);
  assert.equal(summary(parsed), "2 objects: wolf, moon");
});

test("names the bad line", () => {
  assert.match(parseEdits("wolf -> goat\nmoon is gold").error, /^line 2: no '->'/);
  assert.match(parseEdits(" -> goat").error, /^line 1: needs one source/);
  assert.match(parseEdits("a -> b -> c").error, /^line 1/);
  assert.equal(parseEdits("\n# nothing\n").error, "the edit list is empty");
});
