// Parses the edit list exactly as attention/plan.py does, so the node can show mistakes while you type.
export const SEPARATORS = ["->", "→"];

export function parseEdits(text) {
  const edits = [];
  const lines = text.split(/\r?\n/);
  for (let index = 0; index < lines.length; index++) {
    const line = lines[index].trim();
    if (!line || line.startsWith("#")) continue;
    const separator = SEPARATORS.find((s) => line.includes(s));
    if (!separator) return { edits, error: `line ${index + 1}: no '->' (write 'source -> target')` };
    const at = line.indexOf(separator);
    const source = line.slice(0, at).trim();
    const target = line.slice(at + separator.length).trim();
    if (!source || !target || target.includes(separator)) {
      return { edits, error: `line ${index + 1}: needs one source and one target` };
    }
    edits.push({ source, target });
  }
  if (!edits.length) return { edits, error: "the edit list is empty" };
  return { edits, error: null };
}

export function summary({ edits, error }) {
  if (error) return `⚠ ${error}`;
  return `${edits.length} object${edits.length > 1 ? "s" : ""}: ${edits.map((e) => e.source).join(", ")}`;
}
