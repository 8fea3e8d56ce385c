"""ALE-Bench with the pack: run the benchmark's edits through an API workflow with ComfyUI's own executor (in this
process, models loaded once), score them as ALE-Edit's evaluation code does, and print ALE-Edit's Table 1 layout
beside the paper's figures, with the means per object count and edit type.

    python3 -m scripts.ale_bench --bench /path/to/ale_bench --ckpt ~/models/checkpoints/dreamshaper_7.safetensors
    python3 -m scripts.ale_bench --bench ../shared/ale_bench --objects 2 --types color --images artificial_img03
    python3 -m scripts.ale_bench --bench /path/to/ale_bench --evaluate-only /path/to/ALE/results   # score existing edits

--bench is a folder in ALE-Bench's layout (images/, masks/<image>/<object>_mask.png, prompts/<n>/<type>/*.json).
The workflow (default: workflows/api/edit_painted_masks_sd15.json) gets each edit's image and edit list; a
painted-masks node gets the benchmark's masks (one LoadImageMask per object), a Dual-Branch guider the edit
type's self-attention schedule (as ALE's run_ale_bench.py: get_hyps), samplers the seed (ALE: 42) and --steps;
images are resized to --size (ALE: 768); --pixel-composite puts the source pixels back after decoding. Edits land in <out>/results/<n>/<type>/<image>/edit_<i>.png (ALE's
layout; existing ones are kept unless --overwrite), scores in <out>/evaluation_results.csv (ALE's columns) and
<out>/report.md. The metric models come from --metric-models (default: ComfyUI's models/leakage_metrics); a
missing one leaves its columns empty. With no --ckpt the checkpoint is a random-weight SD1.5 file: the numbers
are then meaningless, but every step runs for real.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import comfy_env
from harness.runner import Runner, set_inputs
from pipelines.comfyui import ROOT

comfy_env.register_pack()
from leakfree_edit.evaluation import bench as ale_bench  # noqa: E402
from leakfree_edit.evaluation import report  # noqa: E402
from leakfree_edit.evaluation.ale_metrics import AleMetrics  # noqa: E402
from leakfree_edit.evaluation.models import DINO_FILES, load_metric_models  # noqa: E402

DEFAULT_WORKFLOW = ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json"
PAINTED = "LeakFreeObjectMasksPainted"
MASK_NODES = (PAINTED, "LeakFreeObjectMasksGroundedSAM", "LeakFreeMasksFromAttention")
SEED_INPUTS = ("seed", "noise_seed")
SIZE_INPUTS = {"ImageScale": ("width", "height"), "EmptyLatentImage": ("width", "height")}


# ----------------------------------------------------------------------------- jobs and graphs (small, replaceable)


def prepare_inputs(bench: Path, edit: ale_bench.BenchEdit, size: int, input_dir: Path) -> tuple[str, list[str]]:
    """The edit's image and its objects' masks resized to ``size`` in ``input_dir``; returns their file names."""
    from PIL import Image

    image_name = f"{edit.image}.png"
    if not (input_dir / image_name).exists():
        with Image.open(bench / "images" / f"{edit.image}.jpg") as image:
            image.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(input_dir / image_name)
    files, names = ale_bench.mask_files(bench, edit.image), []
    for source, _ in edit.edits:
        name = f"{edit.image}__{source}_mask.png"
        if not (input_dir / name).exists():
            with Image.open(files[source]) as mask:
                mask.convert("L").resize((size, size), Image.Resampling.NEAREST).save(input_dir / name)
        names.append(name)
    return image_name, names


def edit_graph(template: dict, edit: ale_bench.BenchEdit, image: str, masks: list[str], seed: int, steps: int | None, size: int,
               cfg: float | None = None) -> dict:
    """``template`` with the edit's image, edit list, masks (painted-masks node), schedule (dual-branch guider), seed, steps,
    size and (KSampler) CFG."""
    graph = json.loads(json.dumps(template))
    painted = [key for key, node in graph.items() if node["class_type"] == PAINTED]
    if len(painted) > 1:
        raise SystemExit(f"the workflow has {len(painted)} painted-masks nodes ({', '.join(painted)}); the runner fills exactly one")
    for key in painted:
        inputs = graph[key]["inputs"]
        for name in [n for n in inputs if n.startswith("mask_")]:
            linked = inputs.pop(name)
            if isinstance(linked, list) and graph.get(linked[0], {}).get("class_type") == "LoadImageMask":
                del graph[linked[0]]
        for index, name in enumerate(masks, start=1):
            graph[f"bench_mask_{index}"] = {"class_type": "LoadImageMask", "inputs": {"image": name, "channel": "red"},
                                            "_meta": {"title": f"Mask: {edit.edits[index - 1][0]}"}}
            inputs[f"mask_{index}"] = [f"bench_mask_{index}", 0]
    for node in graph.values():
        inputs, kind = node["inputs"], node["class_type"]
        if kind == "LoadImage":
            inputs["image"] = image
        if kind.startswith("LeakFree") and "edits" in inputs:
            inputs["edits"] = edit.edit_list
        if kind == "LeakFreeDualBranchGuider":
            inputs["self_attention_schedule"] = edit.edit_type
        for name in SEED_INPUTS:
            if isinstance(inputs.get(name), int):
                inputs[name] = seed
        if steps is not None and isinstance(inputs.get("steps"), int):
            inputs["steps"] = steps
        if cfg is not None and kind.startswith("KSampler") and "cfg" in inputs:
            inputs["cfg"] = cfg
        for name in SIZE_INPUTS.get(kind, ()):
            inputs[name] = size
    return graph


def with_pixel_composite(graph: dict, feather: int) -> dict:
    """``graph`` with Pixel Background Composite between the VAE Decode a SaveImage saves and that SaveImage: the source
    pixels (what VAE Encode was given) outside the object masks (the first object-mask node's)."""
    graph = json.loads(json.dumps(graph))
    encoded = next((node["inputs"]["pixels"] for node in graph.values() if node["class_type"] == "VAEEncode"), None)
    masks = next((key for key, node in graph.items() if node["class_type"] in MASK_NODES), None)
    saves = [node for node in graph.values() if node["class_type"] == "SaveImage"
             and graph.get(node["inputs"]["images"][0], {}).get("class_type") == "VAEDecode"]
    if encoded is None or masks is None or not saves:
        raise SystemExit("--pixel-composite needs a workflow with VAE Encode, an object-mask node and VAE Decode -> Save Image")
    for node in saves:
        graph["pixel_composite"] = {"class_type": "LeakFreePixelBackgroundComposite", "_meta": {"title": "Pixel Background Composite"},
                                    "inputs": {"edited": node["inputs"]["images"], "source": encoded, "object_masks": [masks, 0],
                                               "feather": feather}}
        node["inputs"]["images"] = ["pixel_composite", 0]
    return graph


def saved_image(outputs: dict, output_dir: Path) -> Path:
    """The first image a SaveImage node wrote."""
    for output in outputs.values():
        for image in output.get("images", []):
            if image.get("type") == "output":
                return output_dir / image.get("subfolder", "") / image["filename"]
    raise RuntimeError("the workflow saved no image (it needs a SaveImage node)")


def run_in_process(bench: Path, edits: list[ale_bench.BenchEdit], template: dict, results: Path, args) -> list[str]:
    """Every edit through ComfyUI's executor in this process (``harness.runner.Runner``); returns the failures."""
    import folder_paths

    scratch = Path(tempfile.mkdtemp(prefix="leakfree-ale-bench-"))
    (scratch / "input").mkdir()
    (scratch / "output").mkdir()
    folder_paths.set_input_directory(str(scratch / "input"))
    folder_paths.set_output_directory(str(scratch / "output"))
    runner, failures = Runner(), []
    todo = [e for e in edits if args.overwrite or not e.result(results).exists()]
    print(f"editing {len(todo)} of {len(edits)} edits ({len(edits) - len(todo)} already in {results})", flush=True)
    started = time.perf_counter()
    for number, edit in enumerate(todo, start=1):
        image, masks = prepare_inputs(bench, edit, args.size, scratch / "input")
        result = runner.run(edit_graph(template, edit, image, masks, args.seed, args.steps, args.size, args.cfg))
        if not result.success:
            failures.append(f"{edit.key}: {result.error}")
            print(f"[{number}/{len(todo)}] {edit.key} FAILED: {result.error}", flush=True)
            continue
        target = edit.result(results)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(saved_image(result.outputs, scratch / "output"), target)
        rate = number / (time.perf_counter() - started)
        print(f"[{number}/{len(todo)}] {edit.key} in {result.seconds:.1f} s (ETA {(len(todo) - number) / rate:.0f} s)", flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return failures


# ----------------------------------------------------------------------------- scoring and the report


def score(bench: Path, edits: list[ale_bench.BenchEdit], results: Path, metrics: AleMetrics) -> list[dict]:
    """ALE's evaluation (EV:89-178) of the edits found in ``results``: one CSV row each."""
    rows = []
    for edit in edits:
        path = edit.result(results)
        if not path.exists():
            continue
        source = ale_bench.read_rgb(bench / "images" / f"{edit.image}.jpg")
        edited = ale_bench.read_rgb(path, size=source.shape[1::-1])
        files = ale_bench.mask_files(bench, edit.image)
        pairs = list(dict(edit.edits).items())  # EV:134: keyed by source object
        scores = metrics.score(source, edited, pairs, [ale_bench.read_mask(files[s]) for s, _ in pairs])
        rows.append({"file_id": f"{edit.image}_{path.name}", "target_count": edit.objects, "edit_type": edit.edit_type, **scores.values})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, required=True, help="a folder in ALE-Bench's layout")
    parser.add_argument("--out", type=Path, default=Path("ale_bench_out"), help="results, CSV and report go here")
    parser.add_argument("--workflow", type=Path, default=DEFAULT_WORKFLOW, help="API-format workflow with the pack's nodes")
    parser.add_argument("--ckpt", type=Path, help="SD1.5 checkpoint file; none = a random-weight one (a dry run)")
    parser.add_argument("--images", nargs="+", help="image names or prefixes (e.g. artificial_img03, natural)")
    parser.add_argument("--objects", nargs="+", type=int, choices=ale_bench.OBJECT_COUNTS, help="object counts (1 2 3)")
    parser.add_argument("--types", nargs="+", choices=ale_bench.EDIT_TYPES, help="edit types")
    parser.add_argument("--limit", type=int, help="at most this many edits (after the filters)")
    parser.add_argument("--size", type=int, default=768, help="edit at this square size (ALE: 768)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the workflow's)")
    parser.add_argument("--seed", type=int, default=42, help="sampler seed (ALE: 42)")
    parser.add_argument("--cfg", type=float, help="KSampler CFG (default: the workflow's; 1 halves the UNet batch)")
    parser.add_argument("--pixel-composite", type=int, metavar="FEATHER", help="put the source pixels back outside the objects "
                        "after decoding (Pixel Background Composite, this edge width in px): the background is then the photo")
    parser.add_argument("--metric-models", type=Path, help="folder of the metric models (default: ComfyUI's models/leakage_metrics)")
    parser.add_argument("--evaluate-only", type=Path, metavar="RESULTS", help="score the edits already in RESULTS (ALE's layout)")
    parser.add_argument("--overwrite", action="store_true", help="edit again what is already in the results folder")
    args = parser.parse_args(argv)

    edits = ale_bench.read_edits(args.bench, args.images, args.objects, args.types, args.limit)
    if not edits:
        print(f"no edits in {args.bench} match the filters", file=sys.stderr)
        return 1
    comfy_env.prepare_comfy(base_directory=None)
    import folder_paths

    notes, failures = [], []
    results = args.evaluate_only or args.out / "results"
    if args.evaluate_only is None:
        if args.ckpt:
            folder_paths.add_model_folder_path("checkpoints", str(args.ckpt.resolve().parent), is_default=True)
        else:
            from harness import model_files

            random_checkpoint = model_files.write_model_files(Path(tempfile.mkdtemp(prefix="leakfree-models-")), only=("checkpoints",))["checkpoints"]
            folder_paths.add_model_folder_path("checkpoints", str(random_checkpoint.parent), is_default=True)
            notes.append("random-weight SD1.5 checkpoint (no --ckpt): a dry run, the numbers are meaningless")
        template = set_inputs(json.loads(args.workflow.read_text()), ckpt_name=args.ckpt.name if args.ckpt else None)
        if args.pixel_composite is not None:
            template = with_pixel_composite(template, args.pixel_composite)
        failures = run_in_process(args.bench, edits, template, results, args)
        notes.append(f"workflow {args.workflow.name}, {args.size} px, seed {args.seed}" + (f", {args.steps} steps" if args.steps else "")
                     + (f", CFG {args.cfg}" if args.cfg is not None else "")
                     + (f", pixel background composite ({args.pixel_composite} px edge)" if args.pixel_composite is not None else ""))

    import comfy.model_management

    folder = args.metric_models
    if folder is None:
        folder = Path(folder_paths.models_dir) / "leakage_metrics"
    device = comfy.model_management.get_torch_device()
    models = load_metric_models(folder, device)
    notes += list(models.missing.values())
    if models.dino is not None and not models.loaded["dino"].split("/")[-1].startswith(next(iter(DINO_FILES))):
        notes.append(f"structure distance with {models.dino.name}, not ALE's DINO ViT-B/8: not comparable to the paper")
    started = time.perf_counter()
    rows = score(args.bench, edits, results, AleMetrics(models.clip, models.lpips, models.dino, device))
    print(f"scored {len(rows)} edits in {time.perf_counter() - started:.1f} s", flush=True)
    notes += [f"failed: {failure}" for failure in failures]
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_csv(args.out / "evaluation_results.csv", rows)
    text = report.report(rows, "this run", notes)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'evaluation_results.csv'}, {args.out / 'report.md'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
