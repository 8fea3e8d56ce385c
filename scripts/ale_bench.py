"""ALE-Bench with the pack: run the benchmark's edits with ComfyUI's own executor (in this process, models loaded once),
score them as ALE-Edit's evaluation code does, and print ALE-Edit's Table 1 like for like (the paper's row is the whole
benchmark's; the run's row names its subset), with the means per half, object count and edit type.

    python3 -m scripts.ale_bench --bench /path/to/ALE/ale_bench --ckpt ~/models/checkpoints/dreamshaper_7.safetensors
    python3 -m scripts.ale_bench --bench ../shared/ale_bench --objects 2 --types color --images artificial_img03 --masks bench
    python3 -m scripts.ale_bench --bench ../shared/ale_bench --protocol workflow --workflow api_workflows/edit_painted_masks_sd15.json
    python3 -m scripts.ale_bench --bench /path/to/ale_bench --evaluate-only /path/to/ALE/results   # score existing edits

--bench is a folder in ALE-Bench's layout (images/, masks/<image>/<object>_mask.png, prompts/<n>/<type>/*.json).

--protocol ale (the default) is ALE-Edit's run_ale_bench.py (RB) and ale/edit.py (ED) at b57e21e, with the pack's nodes:
the dual-branch LCM workflow (api_workflows/edit_dual_branch_lcm_sd15.json: ORE, RGB-CAM, the dual-branch guider, the
lcm sampler on the simple schedule), 15 steps (ED:33), target CFG 2 / source CFG 1 (ED:31-32), both branches from pure
noise and ALE's background blend, the self-attention lock of each prompt's editing types (RB:9-21, 101-102), masks by
Grounded-SAM with box 0.45 / text 0.4 / dilation 4 % (ED:37-40) -- or, with --masks bench, the benchmark's hand masks
dilated the same (not ALE's protocol; the report says so) --, the image resized to 768 x 768 with PIL's default bicubic
(ED:35-36, 62), seed 42 (RB:46-50), and Object-Restricted Encode's source_substitution = ale_code (ALE's ore.py).
ALE used LCM Dreamshaper v7: give its single-file checkpoint with --lcm-lora none, or an SD1.5 checkpoint with the LCM
LoRA (the workflow's default, lcm-lora-sdv1-5.safetensors in models/loras). --size, --steps and --seed override the
protocol for a quick run; the report lists every difference from ALE's protocol.

--protocol workflow runs any API workflow (--workflow, default api_workflows/edit_painted_masks_sd15.json): each edit's
image and edit list, a painted-masks node the benchmark's masks (one LoadImageMask per object), a Dual-Branch guider the
prompt's self-attention schedule, samplers the seed and --steps, KSampler --cfg; images resized to --size with LANCZOS;
--pixel-composite puts the source pixels back after decoding.

Edits land in <out>/results/<n>/<type>/<image>/edit_<i>.png (ALE's layout; existing ones are kept unless --overwrite),
scores in <out>/evaluation_results.csv (ALE's columns: --metrics takes the names of ALE's evaluate_ale.py --metrics, or
"all") and <out>/report.md. The metric models come from --metric-models (default: ComfyUI's models/leakage_metrics); a
missing one leaves its columns empty. With no --ckpt every model the workflow loads is a random-weight file in the real
format (checkpoint, LCM LoRA, Grounding-DINO, SAM): the numbers are then meaningless, but every step runs for real.
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
from leakfree_edit.attention.dual_branch import SELF_ATTENTION_SCHEDULES  # noqa: E402
from leakfree_edit.evaluation import bench as ale_bench  # noqa: E402
from leakfree_edit.evaluation import report  # noqa: E402
from leakfree_edit.evaluation.ale_metrics import ALL_METRICS, METRICS, AleMetrics, check_metrics  # noqa: E402
from leakfree_edit.evaluation.models import DINO_FILES, load_metric_models  # noqa: E402

DEFAULT_WORKFLOW = ROOT / "api_workflows" / "edit_painted_masks_sd15.json"
ALE_WORKFLOW = ROOT / "api_workflows" / "edit_dual_branch_lcm_sd15.json"
PAINTED = "LeakFreeObjectMasksPainted"
GROUNDED_SAM = "LeakFreeObjectMasksGroundedSAM"
MASK_NODES = (PAINTED, GROUNDED_SAM, "LeakFreeMasksFromAttention")
SEED_INPUTS = ("seed", "noise_seed")
SIZE_INPUTS = {"ImageScale": ("width", "height"), "EmptyLatentImage": ("width", "height")}
# ALE-Edit's protocol (ED = ale/edit.py, RB = run_ale_bench.py at b57e21e)
ALE_SIZE, ALE_STEPS, ALE_SEED = 768, 15, 42  # ED:33-36, RB:46-50
ALE_MASKS = {"box_threshold": 0.45, "text_threshold": 0.4, "dilation_percent": 4.0}  # ED:37-40
ALE_SETTINGS = {  # every input of the workflow the protocol fixes, by node class
    "LeakFreeObjectRestrictedEncode": {"eos_mode": "object", "source_substitution": "ale_code"},
    "LeakFreeRegionGuidedCrossAttention": {"isolation": "ale", "start_percent": 0.0, "end_percent": 1.0, "mask_resize": "nearest"},
    "LeakFreeDualBranchGuider": {"source_cfg": 1.0, "target_cfg": 2.0, "start": "noise", "background_blend": "ale",
                                 "blend_end_percent": 1.0, "feather": 0},
    "ModelSamplingDiscrete": {"sampling": "lcm", "zsnr": False},
    "KSamplerSelect": {"sampler_name": "lcm"},
    "BasicScheduler": {"scheduler": "simple", "denoise": 1.0},
    "ImageScale": {"upscale_method": "bicubic", "crop": "disabled"},  # the image is already at size: an exact copy
    GROUNDED_SAM: {**ALE_MASKS, "instances": "all", "overlap": "background"},
    PAINTED: {"dilation_percent": ALE_MASKS["dilation_percent"], "overlap": "background"},
}
LORA_LOADER = "LoraLoaderModelOnly"
CUSTOM = "custom"


# ----------------------------------------------------------------------------- jobs and graphs (small, replaceable)


def ale_schedule(edit: ale_bench.BenchEdit) -> tuple[str, float | None]:
    """RB:9-21 (``get_hyps``) on the prompt's editing types: the guider's preset of that name, or ``custom`` 1.0 where
    RB falls back to 1.0 ("editing types are weird")."""
    name = "+".join(edit.editing_types or (edit.edit_type,))
    return (name, None) if name in SELF_ATTENTION_SCHEDULES else (CUSTOM, 1.0)


def prepare_inputs(bench: Path, edit: ale_bench.BenchEdit, size: int, input_dir: Path, resample, masks: bool = True) -> tuple[str, list[str]]:
    """The edit's image resized to ``size`` x ``size`` with ``resample`` and (``masks``) its objects' masks (nearest) in
    ``input_dir``; returns their file names."""
    from PIL import Image

    image_name = f"{edit.image}.png"
    if not (input_dir / image_name).exists():
        with Image.open(bench / "images" / f"{edit.image}.jpg") as image:
            image.convert("RGB").resize((size, size), resample).save(input_dir / image_name)
    if not masks:
        return image_name, []
    files, names = ale_bench.mask_files(bench, edit.image), []
    for source, _ in edit.edits:
        name = f"{edit.image}__{source}_mask.png"
        if not (input_dir / name).exists():
            with Image.open(files[source]) as mask:
                mask.convert("L").resize((size, size), Image.Resampling.NEAREST).save(input_dir / name)
        names.append(name)
    return image_name, names


def linked_from(graph: dict, node_id: str) -> list[tuple[str, str]]:
    """(node, input) pairs that read an output of ``node_id``."""
    return [(key, name) for key, node in graph.items() for name, value in node["inputs"].items()
            if isinstance(value, list) and len(value) == 2 and value[0] == node_id]


def ale_protocol_graph(template: dict, masks: str = "grounded-sam", lcm_lora: str | None = None, detector: str | None = None,
                       segmenter: str | None = None, steps: int = ALE_STEPS, on_missing: str = "error") -> dict:
    """The dual-branch LCM workflow set to ALE-Edit's protocol (:data:`ALE_SETTINGS`, ``steps``): ``masks`` "grounded-sam"
    keeps its Grounded-SAM node (``detector``/``segmenter`` file names if given; ``on_missing`` for an object it does not
    find), "bench" puts Object Masks from Painted Masks in its place for the benchmark's masks; ``lcm_lora`` a file name,
    or "none" to leave the LoRA out (an LCM checkpoint)."""
    graph = json.loads(json.dumps(template))
    kinds = {node["class_type"] for node in graph.values()}
    needed = {"LeakFreeObjectRestrictedEncode", "LeakFreeRegionGuidedCrossAttention", "LeakFreeDualBranchGuider", "BasicScheduler", GROUNDED_SAM}
    if needed - kinds:
        raise SystemExit(f"the ALE protocol needs the dual-branch workflow ({ALE_WORKFLOW.name}); this one lacks {', '.join(sorted(needed - kinds))}")
    if masks == "bench":
        key = next(k for k, node in graph.items() if node["class_type"] == GROUNDED_SAM)
        found = graph[key]["inputs"]
        for loader in (found["detector"][0], found["segmenter"][0]):
            del graph[loader]
        graph[key] = {"class_type": PAINTED, "_meta": {"title": "Object Masks (the benchmark's masks)"},
                      "inputs": {"edit_plan": found["edit_plan"], "image": found["image"]}}
    for node in graph.values():
        inputs, kind = node["inputs"], node["class_type"]
        inputs.update(ALE_SETTINGS.get(kind, {}))
        if kind == "BasicScheduler":
            inputs["steps"] = steps
        if kind == GROUNDED_SAM:
            inputs["on_missing"] = on_missing
            graph[inputs["detector"][0]]["inputs"]["model_name"] = detector or graph[inputs["detector"][0]]["inputs"]["model_name"]
            graph[inputs["segmenter"][0]]["inputs"]["model_name"] = segmenter or graph[inputs["segmenter"][0]]["inputs"]["model_name"]
    for key in [k for k, node in graph.items() if node["class_type"] == LORA_LOADER]:
        if lcm_lora == "none":
            for reader, name in linked_from(graph, key):
                graph[reader]["inputs"][name] = graph[key]["inputs"]["model"]
            del graph[key]
        elif lcm_lora:
            graph[key]["inputs"]["lora_name"] = lcm_lora
    return graph


def edit_graph(template: dict, edit: ale_bench.BenchEdit, image: str, masks: list[str], seed: int, steps: int | None, size: int,
               cfg: float | None = None) -> dict:
    """``template`` with the edit's image, edit list, masks (painted-masks node), self-attention schedule (dual-branch
    guider: :func:`ale_schedule`), seed, steps, size and (KSampler) CFG."""
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
            inputs["self_attention_schedule"], custom = ale_schedule(edit)
            if custom is not None:
                inputs["custom_schedule"] = custom
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
    from PIL import Image

    scratch = Path(tempfile.mkdtemp(prefix="leakfree-ale-bench-"))
    (scratch / "input").mkdir()
    (scratch / "output").mkdir()
    folder_paths.set_input_directory(str(scratch / "input"))
    folder_paths.set_output_directory(str(scratch / "output"))
    runner, failures = Runner(), []
    check_model_files(template)  # the pack's model folders exist once its nodes are loaded
    todo = [e for e in edits if args.overwrite or not e.result(results).exists()]
    print(f"editing {len(todo)} of {len(edits)} edits ({len(edits) - len(todo)} already in {results})", flush=True)
    ale = args.protocol == "ale"
    resample = Image.Resampling.BICUBIC if ale else Image.Resampling.LANCZOS  # ED:62: PIL's default resize
    painted = any(node["class_type"] == PAINTED for node in template.values())
    started = time.perf_counter()
    for number, edit in enumerate(todo, start=1):
        image, masks = prepare_inputs(bench, edit, args.size, scratch / "input", resample, masks=painted)
        result = runner.run(edit_graph(template, edit, image, masks, args.seed, None if ale else args.steps, args.size,
                                       None if ale else args.cfg))
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


def check_model_files(graph: dict) -> None:
    """Stop before the first edit when a model file the graph loads is not in ComfyUI's model folders (else every edit
    would fail with the same validation error)."""
    import folder_paths

    loaders = {"CheckpointLoaderSimple": ("ckpt_name", "checkpoints"), LORA_LOADER: ("lora_name", "loras"),
               "LeakFreeGroundingDinoLoader": ("model_name", "grounding-dino"), "LeakFreeSAMLoader": ("model_name", "sams")}
    missing = []
    for node in graph.values():
        if node["class_type"] in loaders:
            name, folder = loaders[node["class_type"]]
            if folder_paths.get_full_path(folder, node["inputs"][name]) is None:
                missing.append(f"{node['inputs'][name]} (models/{folder}: {', '.join(folder_paths.get_folder_paths(folder))})")
    if missing:
        raise SystemExit("model files not found: " + "; ".join(missing) + ". Put them there, or name other files "
                         "(--lcm-lora, --detector, --segmenter; --lcm-lora none for an LCM checkpoint; --masks bench needs no detector)")


def ale_protocol_notes(graph: dict, args) -> list[str]:
    """What the report says about an ALE-protocol run: the protocol, the masks, the models, and every difference from
    ALE-Edit's own run."""
    loaders = {node["class_type"]: node["inputs"] for node in graph.values()}
    checkpoint = loaders["CheckpointLoaderSimple"]["ckpt_name"]
    lora = loaders.get(LORA_LOADER, {}).get("lora_name")
    notes = [f"protocol: ALE (run_ale_bench.py): dual-branch LCM workflow ({ALE_WORKFLOW.name}), {args.steps} steps, target CFG 2 / "
             f"source CFG 1, the self-attention lock of each prompt's editing types, {args.size} px (PIL bicubic), seed {args.seed}, "
             "Object-Restricted Encode's source_substitution = ale_code",
             f"model: {checkpoint}" + (f" + LoRA {lora}" if lora else " (no LoRA)") + " (ALE: LCM Dreamshaper v7)"]
    if args.masks == "bench":
        notes.append("masks: the benchmark's hand masks, dilated 4 % (--masks bench): NOT ALE's protocol, whose masks come from "
                     "Grounded-SAM; results made with the masks the evaluation scores with")
    else:
        dino, sam = loaders["LeakFreeGroundingDinoLoader"]["model_name"], loaders["LeakFreeSAMLoader"]["model_name"]
        missed = ("an edit with an object not found fails and is listed below" if args.on_missing == "error" else
                  "an object not found is edited unmasked (--on-missing unmasked; ALE's code has no guard)")
        notes.append(f"masks: Grounded-SAM ({dino}, {sam}; box 0.45, text 0.4, dilation 4 %) (ALE: grounding-dino-base + SAM 2.1 hiera "
                     f"large); {missed}")
    differences = [f"{what} {value} (ALE: {ale})" for what, value, ale in
                   (("size", f"{args.size} px", f"{ALE_SIZE} px"), ("steps", args.steps, ALE_STEPS), ("seed", args.seed, ALE_SEED))
                   if value != ale]
    if differences:
        notes.append("differs from ALE's protocol: " + ", ".join(differences))
    notes.append(f"noise: ComfyUI's RandomNoise with seed {args.seed} (ALE: torch's global generator after manual_seed): other "
                 "numbers, the same distribution")
    return notes


# ----------------------------------------------------------------------------- scoring and the report


def score(bench: Path, edits: list[ale_bench.BenchEdit], results: Path, metrics: AleMetrics, names=METRICS) -> list[dict]:
    """ALE's evaluation (EV:89-178) of the edits found in ``results``: one CSV row each (plus the image's half)."""
    rows = []
    for edit in edits:
        path = edit.result(results)
        if not path.exists():
            continue
        source = ale_bench.read_rgb(bench / "images" / f"{edit.image}.jpg")
        edited = ale_bench.read_rgb(path, size=source.shape[1::-1])
        files = ale_bench.mask_files(bench, edit.image)
        pairs = list(dict(edit.edits).items())  # EV:134: keyed by source object
        scores = metrics.score(source, edited, pairs, [ale_bench.read_mask(files[s]) for s, _ in pairs], names)
        rows.append({"file_id": f"{edit.image}_{path.name}", "target_count": edit.objects, "edit_type": edit.edit_type,
                     "half": edit.half, **scores.values})
    return rows


def metric_names(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return METRICS
    names = ALL_METRICS if values == ["all"] else values
    try:
        return check_metrics(names)
    except ValueError as error:
        raise SystemExit(f"--metrics: {error}") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", type=Path, required=True, help="a folder in ALE-Bench's layout")
    parser.add_argument("--out", type=Path, default=Path("ale_bench_out"), help="results, CSV and report go here")
    parser.add_argument("--protocol", choices=("ale", "workflow"), default="ale",
                        help="ale: ALE-Edit's run_ale_bench.py with the pack's nodes (default); workflow: any API workflow (--workflow)")
    parser.add_argument("--masks", choices=("grounded-sam", "bench"), default="grounded-sam",
                        help="ALE protocol: Grounded-SAM masks as ALE (default), or the benchmark's hand masks (labelled in the report)")
    parser.add_argument("--on-missing", choices=("error", "unmasked"), default="error",
                        help="ALE protocol, Grounded-SAM: an object with no box fails its edit (default), or is edited unmasked")
    parser.add_argument("--lcm-lora", help="ALE protocol: the LCM LoRA file in models/loras (default: the workflow's), or 'none' "
                        "for an LCM checkpoint such as ALE's LCM Dreamshaper v7")
    parser.add_argument("--detector", help="ALE protocol: the Grounding-DINO file in models/grounding-dino (default: the workflow's)")
    parser.add_argument("--segmenter", help="ALE protocol: the SAM file in models/sams (default: the workflow's)")
    parser.add_argument("--workflow", type=Path, help=f"workflow protocol: API-format workflow with the pack's nodes (default {DEFAULT_WORKFLOW.name})")
    parser.add_argument("--ckpt", type=Path, help="SD1.5 checkpoint file; none = random-weight model files (a dry run)")
    parser.add_argument("--images", nargs="+", help="image names or prefixes (e.g. artificial_img03, natural)")
    parser.add_argument("--objects", nargs="+", type=int, choices=ale_bench.OBJECT_COUNTS, help="object counts (1 2 3)")
    parser.add_argument("--types", nargs="+", choices=ale_bench.EDIT_TYPES, help="edit types")
    parser.add_argument("--limit", type=int, help="at most this many edits (after the filters)")
    parser.add_argument("--size", type=int, default=ALE_SIZE, help=f"edit at this square size (ALE: {ALE_SIZE})")
    parser.add_argument("--steps", type=int, help=f"sampler steps (ALE protocol: {ALE_STEPS}; workflow protocol: the workflow's)")
    parser.add_argument("--seed", type=int, default=ALE_SEED, help=f"sampler seed (ALE: {ALE_SEED})")
    parser.add_argument("--cfg", type=float, help="workflow protocol: KSampler CFG (default: the workflow's; 1 halves the UNet batch)")
    parser.add_argument("--pixel-composite", type=int, metavar="FEATHER", help="workflow protocol: put the source pixels back outside the "
                        "objects after decoding (Pixel Background Composite, this edge width in px): the background is then the photo")
    parser.add_argument("--metrics", nargs="+", help="ALE's metric names as its evaluate_ale.py --metrics takes them (default its eight), "
                        "or 'all' (" + ", ".join(ALL_METRICS) + ")")
    parser.add_argument("--metric-models", type=Path, help="folder of the metric models (default: ComfyUI's models/leakage_metrics)")
    parser.add_argument("--evaluate-only", type=Path, metavar="RESULTS", help="score the edits already in RESULTS (ALE's layout)")
    parser.add_argument("--overwrite", action="store_true", help="edit again what is already in the results folder")
    args = parser.parse_args(argv)
    names = metric_names(args.metrics)
    ale = args.protocol == "ale"
    misplaced = [flag for flag, value in (("--workflow", args.workflow), ("--cfg", args.cfg), ("--pixel-composite", args.pixel_composite))
                 if ale and value is not None]
    misplaced += [flag for flag, value in (("--masks", args.masks != "grounded-sam"), ("--on-missing", args.on_missing != "error"), ("--lcm-lora", args.lcm_lora),
                                           ("--detector", args.detector), ("--segmenter", args.segmenter)) if not ale and value]
    if misplaced:
        parser.error(f"{', '.join(misplaced)}: only with --protocol {'workflow' if ale else 'ale'}")
    if ale:
        args.steps = args.steps or ALE_STEPS

    edits = ale_bench.read_edits(args.bench, args.images, args.objects, args.types, args.limit)
    if not edits:
        print(f"no edits in {args.bench} match the filters", file=sys.stderr)
        return 1
    dry_run = args.evaluate_only is None and args.ckpt is None
    comfy_env.prepare_comfy(base_directory=tempfile.mkdtemp(prefix="leakfree-dry-run-") if dry_run else None)
    import folder_paths

    notes, failures = [], []
    results = args.evaluate_only or args.out / "results"
    if args.evaluate_only is None:
        workflow = ALE_WORKFLOW if ale else (args.workflow or DEFAULT_WORKFLOW)
        template = set_inputs(json.loads(workflow.read_text()), ckpt_name=args.ckpt.name if args.ckpt else None)
        if ale:
            template = ale_protocol_graph(template, args.masks, args.lcm_lora, args.detector, args.segmenter, args.steps, args.on_missing)
        elif args.pixel_composite is not None:
            template = with_pixel_composite(template, args.pixel_composite)
        if args.ckpt:
            folder_paths.add_model_folder_path("checkpoints", str(args.ckpt.resolve().parent), is_default=True)
        else:
            write_random_models(template)
            notes.append("random-weight model files (no --ckpt): a dry run, the numbers are meaningless")
        failures = run_in_process(args.bench, edits, template, results, args)
        if ale:
            notes[:0] = ale_protocol_notes(template, args)
        else:
            notes.insert(0, f"protocol: workflow {workflow.name}, {args.size} px (LANCZOS), seed {args.seed}" + (f", {args.steps} steps" if args.steps else "")
                         + (f", CFG {args.cfg}" if args.cfg is not None else "")
                         + (f", pixel background composite ({args.pixel_composite} px edge)" if args.pixel_composite is not None else ""))
    else:
        notes.append(f"edits made elsewhere: {args.evaluate_only}")

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
    rows = score(args.bench, edits, results, AleMetrics(models.clip, models.lpips, models.dino, device), names)
    print(f"scored {len(rows)} edits in {time.perf_counter() - started:.1f} s", flush=True)
    notes += [f"failed: {failure}" for failure in failures]
    args.out.mkdir(parents=True, exist_ok=True)
    report.write_csv(args.out / "evaluation_results.csv", rows, names)
    text = report.report(rows, "this run", notes, names)
    (args.out / "report.md").write_text(text)
    print(text)
    print(f"written: {args.out / 'evaluation_results.csv'}, {args.out / 'report.md'}")
    return 1 if failures else 0


def write_random_models(graph: dict) -> None:
    """Random-weight files in the real formats for every model the graph loads, in the (scratch) ComfyUI's models folder."""
    import folder_paths
    from harness import model_files

    kinds = {node["class_type"] for node in graph.values()}
    wanted = ["checkpoints"] + [name for kind, name in ((LORA_LOADER, "loras"), ("LeakFreeGroundingDinoLoader", "grounding-dino"),
                                                         ("LeakFreeGroundingDinoLoader", "bert-base-uncased"), ("LeakFreeSAMLoader", "sams"))
                                if kind in kinds]
    model_files.write_model_files(Path(folder_paths.models_dir), only=wanted)


if __name__ == "__main__":
    sys.exit(main())
