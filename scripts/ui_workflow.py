"""The UI-format twin of an API-format workflow, as the app would save it (see harness/ui_workflow.py).

    python3 -m scripts.ui_workflow workflows/api/edit_painted_masks_sd15.json   # writes workflows/edit_painted_masks_sd15.json
    python3 -m scripts.ui_workflow workflows/api/*.json                         # every template

The canvas note comes from workflows/api/NAME.md, the groups from each node's ``_meta.group``.
"""
import json
import sys
from pathlib import Path

from harness import comfy_env
from harness.ui_workflow import read_note, to_ui, ui_path


def main(paths: list[str]) -> int:
    comfy_env.prepare_comfy()
    classes = comfy_env.load_nodes()
    for api in map(Path, paths):
        out = ui_path(api)
        out.write_text(json.dumps(to_ui(json.loads(api.read_text()), classes, read_note(api)), indent=1) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
