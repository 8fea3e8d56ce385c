// The pack's templates in ComfyUI's template browser. Frontend 1.27.10 lists a custom node pack's templates in the
// order the server's unsorted glob of workflows/*.json returns them (app/custom_node_manager.py), titles each card
// with its file name and repeats the name, underscores as spaces, as its description. templates.json holds the
// order a new user should try them in (the recommended first template first) and each card's title and description.

export function orderTemplates(names, templates) {
  // The listed templates in templates.json's order, then any others by name.
  const rank = new Map(templates.map((t, i) => [t.name, i]));
  const position = (name) => rank.get(name) ?? templates.length;
  return [...names].sort((a, b) => position(a) - position(b) || a.localeCompare(b));
}

export function describeCards(root, templates) {
  // Give each of the pack's cards under `root` its title and description (the card's <h3> and <p>).
  for (const template of templates) {
    const card = root.querySelector(`[data-testid="template-workflow-${template.name}"]`);
    if (!card) continue;
    for (const [selector, text] of [["h3", template.title], ["p", template.description]]) {
      const element = card.querySelector(selector);
      if (element && element.textContent !== text) {
        element.textContent = text;
        element.title = text;
      }
    }
  }
}

export function installTemplateBrowser(api, pack, loadTemplates) {
  // Order the pack's entry of the template index, and describe its cards whenever the dialog shows them.
  let templates = null;
  const templatesOnce = async () => (templates ??= await loadTemplates().catch(() => []));
  const listed = api.getWorkflowTemplates.bind(api);
  api.getWorkflowTemplates = async () => {
    const index = await listed();
    if (Array.isArray(index?.[pack])) index[pack] = orderTemplates(index[pack], await templatesOnce());
    return index;
  };
  const observer = new MutationObserver(() => {
    if (templates?.length && document.querySelector('[data-testid^="template-workflow-"]')) describeCards(document, templates);
  });
  observer.observe(document.body, { childList: true, subtree: true });
  return observer;
}
