"""Seconds per sampling step and peak memory of Dynamic Prompt Learning on vs off.

The full SD1.5 UNet and CLIP shapes (random weights, ComfyUI's own classes) at 512x512 (64x64 latent, losses on the
16x16 layers as DPL), ORE + RGB-CAM + the Dual-Branch Edit Guider (LCM, target CFG 2, source CFG 1), painted-style
masks for the background term:

- off: the graph without the DPL node;
- on: with it, ``--iterations`` passes per step (random weights never meet DPL's thresholds, so every pass runs).

Every variant runs in its own process; time and memory are measured as in bench/dual_branch_step.py (wall and
process CPU time of each guider call, peak RSS growth during sampling on the CPU). DPL's 21 passes cost about
21x one pass: the script prints the per-pass cost so the figure for 21 follows without a 10-minute run.

    python3 -m bench.prompt_learning --iterations 2
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipelines.comfyui import ROOT

from .dual_branch_step import sd15_edit, timed_sample

STEPS = 1


def measure(variant: str, iterations: int) -> dict:
    clip, model, target, source, plan, negative, latent = sd15_edit()
    import torch

    from harness.editing import object_masks
    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.prompt_learning import DynamicPromptLearning
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    masks = object_masks(512, 512)
    model, = RegionGuidedCrossAttention.execute(model, target, masks)
    if variant == "on":
        model, = DynamicPromptLearning.execute(model, clip, plan, nouns="wolf, moon", iterations=iterations, object_masks=masks,
                                               attend_beta=0.0, background_beta=0.0, disjoint_beta=0.0)
    guider, = DualBranchGuider.execute(model, source, target, negative, {"samples": latent}, 1.0, 2.0, "custom", 0.0)
    return timed_sample(guider, model, latent, variant, torch.inference_mode, STEPS)  # as ComfyUI runs a prompt


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2, help="DPL passes per step (DPL: 21)")
    parser.add_argument("--variant", choices=("off", "on"), help="measure one variant in this process")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.iterations)))
        return
    results = {}
    for variant in ("off", "on"):
        done = subprocess.run([sys.executable, "-m", "bench.prompt_learning", "--variant", variant, "--iterations", str(args.iterations)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        r = results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{variant:4s} step wall {r['step_seconds'][-1]:.1f} s, process CPU {r['cpu_seconds'][-1]:.1f} s   memory before "
              f"sampling {r['before_bytes'] / 2**20:.0f} MiB, peak during sampling +{r['peak_bytes'] / 2**20:.0f} MiB   ({r['device']})")
    off, on = results["off"], results["on"]
    per_pass = (on["step_seconds"][-1] - off["step_seconds"][-1]) / max(1, args.iterations)
    print(f"DPL on: x{on['step_seconds'][-1] / off['step_seconds'][-1]:.1f} wall per step with {args.iterations} passes, "
          f"{per_pass:.1f} s per pass; with DPL's 21 passes about {off['step_seconds'][-1] + 21 * per_pass:.0f} s per step; "
          f"peak memory +{(on['peak_bytes'] - off['peak_bytes']) / 2**20:.0f} MiB over off")


if __name__ == "__main__":
    main()
