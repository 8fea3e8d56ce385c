"""The ALE-Bench runner's work (scripts/ale_bench.py is its command): the benchmark's edits through an API workflow
with ComfyUI's executor in this process (models loaded once), ALE-Edit's protocol fixed on the dual-branch workflow,
the edits written in ALE's results layout, and their scores with the Leakage Metrics code."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from pipelines.comfyui import ROOT
from pipelines.slots import consumers

from . import comfy_env
from .runner import Runner

comfy_env.register_pack()
from leakfree_edit.attention.dual_branch import SELF_ATTENTION_SCHEDULES  # noqa: E402
from leakfree_edit.evaluation import bench as ale_bench  # noqa: E402
from leakfree_edit.evaluation.ale_metrics import ALL_METRICS, METRICS, AleMetrics, check_metrics  # noqa: E402

DEFAULT_WORKFLOW = ROOT / "workflows" / "api" / "edit_painted_masks_sd15.json"
ALE_WORKFLOW = ROOT / "workflows" / "api" / "edit_dual_branch_lcm_sd15.json"
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
            for reader, name in consumers(graph, [key, 0]):  # its one output, the model
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


def write_random_models(graph: dict) -> None:
    """Random-weight files in the real formats for every model the graph loads, in the (scratch) ComfyUI's models folder."""
    import folder_paths

    from . import model_files

    kinds = {node["class_type"] for node in graph.values()}
    wanted = ["checkpoints"] + [name for kind, name in ((LORA_LOADER, "loras"), ("LeakFreeGroundingDinoLoader", "grounding-dino"),
                                                         ("LeakFreeGroundingDinoLoader", "bert-base-uncased"), ("LeakFreeSAMLoader", "sams"))
                                if kind in kinds]
    model_files.write_model_files(Path(folder_paths.models_dir), only=wanted)
