"""Run an API-format workflow headless with ComfyUI's own executor: validation, caching, V1 and V3 nodes as in the app.

    python3 -m scripts.run_workflow                       # the painted-masks example on a random-weight SD1.5 checkpoint
    python3 -m scripts.run_workflow --ckpt ~/models/checkpoints/dreamshaper_8.safetensors
    python3 -m scripts.run_workflow workflows/api/edit_grounded_sam_sd15.json --edits "tree -> tree with golden leaves" --steps 20

The graph runs in this process on the ComfyUI found by pipelines/comfyui.py (the one the pack
is installed in, or the cached ComfyUI 0.3.64), with the pack loaded by ComfyUI's own loader
and models from that ComfyUI's model folders. With no --ckpt, the checkpoint is a random-weight
SD1.5 file in the original single-file layout, written once into a cache folder (the image is
noise, but every loader and node runs for real). Input files are looked up in --input-dir
(default: example_inputs/), images are saved to --output-dir.
"""
import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from harness import comfy_env
from harness.runner import Runner, scale_inputs, set_inputs
from pipelines.comfyui import ROOT
from pipelines.slots import WorkflowError

DEFAULT_WORKFLOW = ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow JSON")
    parser.add_argument("--ckpt", type=Path, help="an SD1.5/SDXL checkpoint file; none = a random-weight SD1.5 checkpoint")
    parser.add_argument("--input-dir", type=Path, default=ROOT / "example_inputs", help="where LoadImage/LoadImageMask files are")
    parser.add_argument("--output-dir", type=Path, default=Path("output"), help="where SaveImage writes")
    parser.add_argument("--edits", help="replace the edit list (one 'source -> target' per line; '\\n' separates lines)")
    parser.add_argument("--steps", type=int, help="replace the sampler's step count")
    parser.add_argument("--size", type=int, help="run at this square size: input images resized, image-scale nodes set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    comfy_env.prepare_comfy(base_directory=None)
    import folder_paths

    if args.ckpt:
        folder_paths.add_model_folder_path("checkpoints", str(args.ckpt.resolve().parent), is_default=True)
    else:
        from harness import model_files

        random_checkpoint = model_files.write_model_files(Path(tempfile.mkdtemp(prefix="leakfree-models-")), only=("checkpoints",))["checkpoints"]
        folder_paths.add_model_folder_path("checkpoints", str(random_checkpoint.parent), is_default=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(args.output_dir.resolve()))
    try:
        graph = set_inputs(json.loads(args.workflow.read_text()), args.edits.replace("\\n", "\n") if args.edits else None, args.steps,
                           args.ckpt.name if args.ckpt else None)
    except WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    input_dir = args.input_dir.resolve()
    if args.size:
        scratch = Path(tempfile.mkdtemp(prefix="leakfree-inputs-"))
        graph = scale_inputs(graph, args.size, input_dir, scratch)
        input_dir = scratch
    folder_paths.set_input_directory(str(input_dir))

    print(f"running {args.workflow.name} on {'checkpoint ' + str(args.ckpt) if args.ckpt else 'a random-weight SD1.5 checkpoint'}", flush=True)
    result = Runner().run(graph)
    if not result.success:
        print(f"failed after {result.seconds:.1f} s: {result.error}", file=sys.stderr)
        return 1
    saved = [image["filename"] for output in result.outputs.values() for image in output.get("images", []) if image.get("type") == "output"]
    print(f"done in {result.seconds:.1f} s: {len(saved)} image(s) in {args.output_dir}/: {', '.join(saved)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
