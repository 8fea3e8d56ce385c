"""Run an API-format workflow of this pack headless, in one process, without the ComfyUI server.

    python scripts/run_workflow.py                       # the painted-masks example, random-weight SD1.5-shaped model
    python scripts/run_workflow.py --ckpt ~/models/checkpoints/dreamshaper_8.safetensors
    python scripts/run_workflow.py workflows/edit_painted_masks_sd15_api.json --edits "wolf -> white horse" --steps 20

With no --ckpt, CheckpointLoaderSimple is replaced by a small random-weight
SD1.5-shaped model built with ComfyUI's own classes (the image is noise, but every
node of the graph runs for real). Input files are looked up in --input-dir
(default: examples/), outputs are written to --output-dir.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import comfy_env

DEFAULT_WORKFLOW = comfy_env.ROOT / "workflows" / "edit_painted_masks_sd15_api.json"


class RandomCheckpointLoader:
    """Stands in for CheckpointLoaderSimple when no checkpoint is named."""

    def load_checkpoint(self, ckpt_name=None, **_):
        import random_models

        return random_models.unet("sd15"), random_models.clip("sd15"), random_models.vae()


def node_classes(random_checkpoint: bool) -> dict:
    classes = comfy_env.node_classes()
    if random_checkpoint:
        classes["CheckpointLoaderSimple"] = type("CheckpointLoaderSimple", (RandomCheckpointLoader,), {"FUNCTION": "load_checkpoint"})
    return classes


def run(workflow: dict, classes: dict) -> dict:
    """Execute every node once, inputs first; returns {node id: outputs}."""
    results: dict = {}

    def evaluate(node_id: str):
        if node_id in results:
            return results[node_id]
        node = workflow[node_id]
        cls = classes.get(node["class_type"])
        if cls is None:
            raise SystemExit(f"node {node_id}: unknown class_type {node['class_type']!r} (is its node pack installed?)")
        inputs = {
            name: evaluate(str(value[0]))[value[1]] if isinstance(value, list) and len(value) == 2 and str(value[0]) in workflow else value
            for name, value in node["inputs"].items()
        }
        started = time.perf_counter()
        out = getattr(cls(), cls.FUNCTION)(**inputs)
        results[node_id] = out.get("result", ()) if isinstance(out, dict) else out
        print(f"  {node_id:>3} {node['class_type']:<40} {time.perf_counter() - started:6.2f} s", flush=True)
        return results[node_id]

    import torch

    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        for node_id in workflow:
            evaluate(node_id)
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow JSON")
    parser.add_argument("--ckpt", type=Path, help="an SD1.5/SDXL checkpoint file; none = random-weight SD1.5-shaped model")
    parser.add_argument("--input-dir", type=Path, default=comfy_env.ROOT / "examples", help="where LoadImage/LoadImageMask files are")
    parser.add_argument("--output-dir", type=Path, default=Path("output"), help="where SaveImage writes")
    parser.add_argument("--edits", help="replace the edit list of Object-Restricted Encode")
    parser.add_argument("--steps", type=int, help="replace the sampler's step count")
    args = parser.parse_args(argv)

    comfy_env.prepare_comfy()
    comfy_env.register_pack()
    _, folder_paths = comfy_env.comfy_core()
    folder_paths.set_input_directory(str(args.input_dir.resolve()))
    args.output_dir.mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(args.output_dir.resolve()))

    workflow = json.loads(args.workflow.read_text())
    for node in workflow.values():
        inputs = node["inputs"]
        if args.edits and node["class_type"] == "LeakFreeObjectRestrictedEncode":
            inputs["edits"] = args.edits.replace("\\n", "\n")
        if args.steps and "steps" in inputs:
            inputs["steps"] = args.steps
        if args.ckpt and node["class_type"] == "CheckpointLoaderSimple":
            folder_paths.add_model_folder_path("checkpoints", str(args.ckpt.resolve().parent))
            inputs["ckpt_name"] = args.ckpt.name
    print(f"running {args.workflow} on {'checkpoint ' + str(args.ckpt) if args.ckpt else 'a random-weight SD1.5-shaped model'}")
    run(workflow, node_classes(random_checkpoint=args.ckpt is None))
    saved = sorted(p.name for p in args.output_dir.glob("*.png"))
    print(f"done: {len(saved)} image(s) in {args.output_dir}/: {', '.join(saved[-3:])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
