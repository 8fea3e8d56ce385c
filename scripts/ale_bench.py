"""ALE-Bench with the pack: run the benchmark's edits with ComfyUI's own executor (in this process, models loaded once),
score them as ALE-Edit's evaluation code does, and print ALE-Edit's Table 1 like for like (the paper's row is the whole
benchmark's; the run's row names its subset), with the means per half, object count and edit type.

    python3 -m scripts.ale_bench --bench /path/to/ALE/ale_bench --ckpt ~/models/checkpoints/dreamshaper_7.safetensors
    python3 -m scripts.ale_bench --bench ../shared/ale_bench --objects 2 --types color --images artificial_img03 --masks bench
    python3 -m scripts.ale_bench --bench ../shared/ale_bench --protocol workflow --workflow workflows/api/edit_painted_masks_sd15.json
    python3 -m scripts.ale_bench --bench /path/to/ale_bench --evaluate-only /path/to/ALE/results   # score existing edits

--bench is a folder in ALE-Bench's layout (images/, masks/<image>/<object>_mask.png, prompts/<n>/<type>/*.json).

--protocol ale (the default) is ALE-Edit's run_ale_bench.py (RB) and ale/edit.py (ED) at b57e21e, with the pack's nodes:
the dual-branch LCM workflow (workflows/api/edit_dual_branch_lcm_sd15.json: ORE, RGB-CAM, the dual-branch guider, the
lcm sampler on the simple schedule), 15 steps (ED:33), target CFG 2 / source CFG 1 (ED:31-32), both branches from pure
noise and ALE's background blend, the self-attention lock of each prompt's editing types (RB:9-21, 101-102), masks by
Grounded-SAM with box 0.45 / text 0.4 / dilation 4 % (ED:37-40) -- or, with --masks bench, the benchmark's hand masks
dilated the same (not ALE's protocol; the report says so) --, the image resized to 768 x 768 with PIL's default bicubic
(ED:35-36, 62), seed 42 (RB:46-50), and Object-Restricted Encode's source_substitution = ale_code (ALE's ore.py).
ALE used LCM Dreamshaper v7: give its single-file checkpoint with --lcm-lora none, or an SD1.5 checkpoint with the LCM
LoRA (the workflow's default, lcm-lora-sdv1-5.safetensors in models/loras). --size, --steps and --seed override the
protocol for a quick run; the report lists every difference from ALE's protocol.

--protocol workflow runs any API workflow (--workflow, default workflows/api/edit_painted_masks_sd15.json): each edit's
image and edit list, a painted-masks node the benchmark's masks (one LoadImageMask per object), a Dual-Branch guider the
prompt's self-attention schedule, samplers the seed and --steps, KSampler --cfg; images resized to --size with LANCZOS;
--pixel-composite puts the source pixels back after decoding.

Edits land in <out>/results/<n>/<type>/<image>/edit_<i>.png (ALE's layout; existing ones are kept unless --overwrite),
scores in <out>/evaluation_results.csv (ALE's columns: --metrics takes the names of ALE's evaluate_ale.py --metrics, or
"all") and <out>/report.md. The metric models come from --metric-models (default: ComfyUI's models/leakage_metrics); a
missing one leaves its columns empty. With no --ckpt every model the workflow loads is a random-weight file in the real
format (checkpoint, LCM LoRA, Grounding-DINO, SAM): the numbers are then meaningless, but every step runs for real.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from harness import comfy_env
from harness.ale_bench import (
    ALE_SEED,
    ALE_SIZE,
    ALE_STEPS,
    ALE_WORKFLOW,
    DEFAULT_WORKFLOW,
    ale_protocol_graph,
    ale_protocol_notes,
    metric_names,
    run_in_process,
    score,
    with_pixel_composite,
    write_random_models,
)
from harness.runner import set_inputs

comfy_env.register_pack()
from leakfree_edit.evaluation import bench as ale_bench  # noqa: E402
from leakfree_edit.evaluation import report  # noqa: E402
from leakfree_edit.evaluation.ale_metrics import ALL_METRICS, AleMetrics  # noqa: E402
from leakfree_edit.evaluation.models import DINO_FILES, load_metric_models  # noqa: E402


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


if __name__ == "__main__":
    sys.exit(main())
