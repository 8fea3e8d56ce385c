"""Step time and peak memory of the Dual-Branch Edit Guider for Flux (FlowEdit) vs plain Flux img2img.

Random weights (ComfyUI's own Flux classes) at a reduced width: hidden ``--width`` (default 768: 6 heads of 128, the
released head width; released 3072, 24 heads) with ``--double`` + ``--single`` blocks (default 1 + 1 of the released
19 + 38), the released text width (T5 4096, 256 tokens) and the image token counts of 512x512 (64x64 latent: 1024
tokens) and 1024x1024 (128x128: 4096 tokens), 2 objects, the euler sampler, CFG 1 with Flux guidance (as Flux dev is
sampled). Variants:

- plain: ComfyUI's CFGGuider on the unpatched model (one row per step: Flux img2img);
- routed: Region-Guided Joint Attention on the same guider (the single-branch edit of ``edit_painted_masks_flux``);
- dual: the Dual-Branch Edit Guider for Flux on the routed model with object masks (two rows per step: target and
  source), the structure lock on in the first two of four steps and off in the last two (``--no-lock``: off throughout).

ComfyUI runs the two rows in one call only when its memory estimate for them (x 1.5) is below the free memory
(``comfy/samplers.py``, ``_calc_cond_batch``); otherwise it runs one call per row, and the lock, which needs both rows
in one call, stops with an error. On the CPU the estimate for Flux is 0.15 MiB x 3.1 per latent pixel and row (GPU
with PyTorch attention, bf16: 0.062 MiB), so two 1024x1024 rows ask for 22 GiB free: measure them with ``--no-lock``.

Method (as bench/dual_branch_step.py): every variant and size in its own process; 4 steps; wall and process CPU
time of each guider call (one step with euler; ``--threads 1`` makes the CPU time the work done, without other
threads' spin-waiting on a shared machine), the first step left out (it pays one-off allocations and the bias's
build); the peak RSS growth during sampling (the kernel's high-water mark reset just before it), i.e. the activations'
peak with the weights excluded, and the RSS before sampling (weights, text, latent). CPU, fp32.

    python3 -m bench.flux_dual_branch [--sizes 512 1024] [--width 768] [--double 1] [--single 1]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipelines.comfyui import ROOT

from .dual_branch_step import timed_sample

VARIANTS = ("plain", "routed", "dual")
EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"
STEPS = 4
LOCK = 0.6  # locked while (step + 1) / 4 < 0.6: the first two steps


def measure(variant: str, size: int, width: int, double: int, single: int, lock: bool = True) -> dict:
    from harness import comfy_env

    comfy_env.prepare_comfy()
    comfy_env.register_pack()
    import comfy.samplers
    import torch

    from harness import random_models
    from leakfree_edit.nodes.dual_branch_flux import DualBranchGuiderFlux
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    random_models.FLUX_SHAPES["bench"] = dict(random_models.FLUX_SHAPES["reduced"], hidden_size=width, num_heads=width // 128,
                                              depth=double, depth_single_blocks=single)
    model = random_models.flux("bench")
    target, source, _ = ObjectRestrictedEncodeFlux.execute(random_models.flux_clip("reduced"), EDITS, "")
    masks = torch.zeros(2, size, size)
    masks[0, : size // 2, : size // 2] = 1
    masks[1, size // 2 :, size // 3 :] = 1
    latent = torch.randn(1, 16, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    routed, = RegionGuidedJointAttention.execute(model, target, masks)
    if variant == "dual":
        guider, = DualBranchGuiderFlux.execute(routed, source, target, {"samples": latent}, lock_schedule="custom",
                                               custom_schedule=LOCK if lock else 0.0, object_masks=masks)
    else:
        guider = comfy.samplers.CFGGuider(model if variant == "plain" else routed)
        positive = [[target[0][0], dict(target[0][1], guidance=3.5)]]
        guider.set_conds(positive, positive)
        guider.set_cfg(1.0)
    calls = []  # the chunks of every model call: how ComfyUI batched the rows
    guider.model_patcher.set_model_unet_function_wrapper(
        lambda apply, args: calls.append(args["cond_or_uncond"]) or apply(args["input"], args["timestep"], **args["c"]))
    result = timed_sample(guider, model, latent, variant, torch.inference_mode, STEPS, "euler", "simple")
    rows = [len(order) for order in calls]
    result.update(size=size, tokens=256 + (size // 16) ** 2, threads=torch.get_num_threads(), torch=torch.__version__,
                  rows_per_call=max(rows), calls_per_step=len(rows) // STEPS)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--width", type=int, default=768, help="hidden width, a multiple of 128 (released: 3072)")
    parser.add_argument("--double", type=int, default=1, help="double blocks (released: 19)")
    parser.add_argument("--single", type=int, default=1, help="single blocks (released: 38)")
    parser.add_argument("--no-lock", action="store_true", help="dual: the structure lock off in every step")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--variant", choices=VARIANTS, help="measure one variant in this process and print JSON")
    args = parser.parse_args(argv)
    if args.variant:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.variant, args.sizes[0], args.width, args.double, args.single, not args.no_lock)))
        return 0
    for size in args.sizes:
        results = {}
        for variant in VARIANTS:
            command = [sys.executable, "-m", "bench.flux_dual_branch", "--variant", variant, "--sizes", str(size), "--width", str(args.width),
                       "--double", str(args.double), "--single", str(args.single)] + (["--no-lock"] if args.no_lock else []) + (["--threads", str(args.threads)] if args.threads else [])
            done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        plain = results["plain"]
        print(f"\n{size}x{size} ({plain['tokens']} tokens), Flux width {args.width} ({args.width // 128} heads of 128), {args.double} double + "
              f"{args.single} single blocks, CPU fp32, {plain['threads']} threads, torch {plain['torch']}")
        warm = lambda r, key: min(r[key][1:])
        for variant, r in results.items():
            steps = ", ".join(f"{wall:.2f} s ({cpu:.2f} CPU s)" for wall, cpu in zip(r["step_seconds"], r["cpu_seconds"]))
            print(f"  {variant:7s} steps: {steps}   {r['calls_per_step']} model call(s) of {r['rows_per_call']} row(s) a step; memory "
                  f"before sampling {r['before_bytes'] / 2**30:.2f} GiB, peak growth {r['peak_bytes'] / 2**20:.0f} MiB")
        for variant in VARIANTS[1:]:
            r = results[variant]
            line = (f"  {variant:7s} vs plain: x{warm(r, 'step_seconds') / warm(plain, 'step_seconds'):.2f} wall, "
                    f"x{warm(r, 'cpu_seconds') / warm(plain, 'cpu_seconds'):.2f} CPU (fastest warm step)")
            if variant == "dual" and not args.no_lock:
                line += (f"; locked step x{r['cpu_seconds'][1] / warm(plain, 'cpu_seconds'):.2f} CPU, unlocked "
                         f"x{min(r['cpu_seconds'][2:]) / warm(plain, 'cpu_seconds'):.2f} CPU")
            total = (r["before_bytes"] + r["peak_bytes"]) / (plain["before_bytes"] + plain["peak_bytes"])
            print(line + f"; activations x{r['peak_bytes'] / plain['peak_bytes']:.2f} "
                         f"(+{(r['peak_bytes'] - plain['peak_bytes']) / 2**20:.0f} MiB), peak RSS x{total:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
