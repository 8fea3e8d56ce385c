"""Run an API-format workflow headless with ComfyUI's own executor: validation, caching, V1 and V3 nodes as in the app.

    python3 -m scripts.run_workflow                       # the painted-masks example on a random-weight SD1.5 checkpoint
    python3 -m scripts.run_workflow --ckpt ~/models/checkpoints/dreamshaper_8.safetensors
    python3 -m scripts.run_workflow workflows/api/edit_grounded_sam_sd15.json --edits "tree -> tree with golden leaves" --steps 20

The graph runs in this process on the ComfyUI found by pipelines/comfyui.py (the one the pack
is installed in, or the cached ComfyUI 0.3.64), with the pack loaded by ComfyUI's own loader
and models from that ComfyUI's model folders. With no --ckpt, the checkpoint is a random-weight
SD1.5 file in the original single-file layout, written into a scratch folder that goes at the end
with the resized inputs of --size (the image is noise, but every loader and node runs for real);
without a GPU that runs at the quick size, 128 px and 2 steps, unless --size or --steps say
otherwise. Input files are looked up in --input-dir (default: example_inputs/), images are saved
to --output-dir, previews (the mask preview) to its previews/ folder; the last lines say where
each one is.
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
QUICK_SIZE, QUICK_STEPS = 128, 2  # the random checkpoint without a GPU: a minute on 2 cores, not 20 at 512 px and 25 steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workflow", nargs="?", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow JSON")
    parser.add_argument("--ckpt", type=Path, help="an SD1.5/SDXL checkpoint file; none = a random-weight SD1.5 checkpoint")
    parser.add_argument("--input-dir", type=Path, default=ROOT / "example_inputs", help="where LoadImage/LoadImageMask files are")
    parser.add_argument("--output-dir", type=Path, default=Path("output"), help="where SaveImage writes")
    parser.add_argument("--edits", help="replace the edit list (one 'source -> target' per line; '\\n' separates lines)")
    parser.add_argument("--steps", type=int, help="replace the step count of every sampler and scheduler")
    parser.add_argument("--size", type=int, help="run at this square size: input images resized, image-scale nodes set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.ckpt and not args.ckpt.is_file():
        print(f"error: no file at {args.ckpt} (--ckpt names your checkpoint file, e.g. "
              "ComfyUI/models/checkpoints/v1-5-pruned-emaonly.safetensors; leave it out to run a random-weight SD1.5 checkpoint)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="leakfree-run-workflow-") as scratch:
        return run(args, Path(scratch))


def run(args, scratch: Path) -> int:
    comfy_env.prepare_comfy(base_directory=None)
    import folder_paths
    import torch

    if args.ckpt:
        folder_paths.add_model_folder_path("checkpoints", str(args.ckpt.resolve().parent), is_default=True)
    else:
        from harness import model_files

        random_checkpoint = model_files.write_model_files(scratch / "models", only=("checkpoints",))["checkpoints"]
        folder_paths.add_model_folder_path("checkpoints", str(random_checkpoint.parent), is_default=True)
        if not torch.cuda.is_available() and args.size is None and args.steps is None:
            args.size, args.steps = QUICK_SIZE, QUICK_STEPS
            print(f"no GPU and no --ckpt: the random-weight checkpoint at the quick size, {QUICK_SIZE} px and {QUICK_STEPS} steps "
                  "(its picture is noise either way; --size and --steps run another size)", flush=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    folder_paths.set_output_directory(str(args.output_dir.resolve()))
    folder_paths.set_temp_directory(str((args.output_dir / "previews").resolve()))
    try:
        graph = set_inputs(json.loads(args.workflow.read_text()), args.edits.replace("\\n", "\n") if args.edits else None, args.steps,
                           args.ckpt.name if args.ckpt else None)
    except WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    input_dir = args.input_dir.resolve()
    if args.size:
        (scratch / "inputs").mkdir()
        graph = scale_inputs(graph, args.size, input_dir, scratch / "inputs")
        input_dir = scratch / "inputs"
    folder_paths.set_input_directory(str(input_dir))

    print(f"running {args.workflow.name} on {'checkpoint ' + str(args.ckpt) if args.ckpt else 'a random-weight SD1.5 checkpoint'}", flush=True)
    result = Runner().run(graph)
    if not result.success:
        print(f"failed after {result.seconds:.1f} s: {result.error}", file=sys.stderr)
        return 1
    print(f"done in {result.seconds:.1f} s")
    folders = {"output": Path(folder_paths.get_output_directory()), "temp": Path(folder_paths.get_temp_directory())}
    for node_id, output in result.outputs.items():
        for image in output.get("images", []):
            if image.get("type") in folders:
                title = graph[node_id].get("_meta", {}).get("title", graph[node_id]["class_type"])
                print(f"{title}: {folders[image['type']] / image.get('subfolder', '') / image['filename']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
