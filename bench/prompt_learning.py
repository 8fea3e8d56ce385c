"""Seconds per sampling step and peak memory of Dynamic Prompt Learning and Attention Replacement, on vs off.

The full SD1.5 UNet and CLIP shapes (random weights, ComfyUI's own classes) at ``--size`` (512: a 64x64 latent, the
losses on the 16x16 layers as DPL), the Dual-Branch Edit Guider (LCM, target CFG 2, source CFG 1), one step from the
noised source (``start`` img2img: a first step from pure noise learns nothing), in these graphs:

- off: ORE + RGB-CAM (painted-style masks), the masked graph without the DPL node;
- on: the same with DPL (masks for the background term), ``--iterations`` passes (random weights never meet DPL's
  thresholds, so every pass runs);
- dual: the guider alone, the mask-free graph without its two nodes;
- replaced: the guider with Attention Replacement, cross- and self-attention replaced in the measured step;
- maskfree: DPL + Attention Replacement (edit_dpl_maskfree_sd15; the background from the masks, to time the same
  losses as "on").

Every variant runs in its own process; time and memory as in bench/dual_branch_step.py (wall and process CPU time of
the guider call, peak RSS growth during sampling on the CPU). DPL's 21 passes cost about 21x one pass: the script
prints the per-pass cost so the figure for 21 follows without a long run.

    python3 -m bench.prompt_learning --iterations 2 --size 512
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

from pipelines.comfyui import ROOT

from .dual_branch_step import sd15_edit, timed_sample

STEPS = 1
VARIANTS = ("off", "on", "dual", "replaced", "maskfree")


def measure(variant: str, iterations: int, size: int) -> dict:
    clip, model, target, source, plan, negative, latent = sd15_edit(size)
    import torch

    from harness.editing import object_masks
    from leakfree_edit.nodes.attention_replacement import AttentionReplacement
    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.prompt_learning import DynamicPromptLearning
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    masks = object_masks(size, size)
    if variant in ("off", "on"):
        model, = RegionGuidedCrossAttention.execute(model, target, masks)
    if variant in ("on", "maskfree"):
        model, = DynamicPromptLearning.execute(model, clip, plan, nouns="wolf, moon", iterations=iterations, object_masks=masks,
                                               attend_beta=0.0, background_beta=0.0, disjoint_beta=0.0)
    if variant in ("replaced", "maskfree"):
        model, = AttentionReplacement.execute(model, clip, plan, cross_replace=1.0, self_replace=1.0)
    guider, = DualBranchGuider.execute(model, source, target, negative, {"samples": latent}, 1.0, 2.0, "custom", 0.0, start="img2img")
    return timed_sample(guider, model, latent, variant, torch.inference_mode, STEPS)  # as ComfyUI runs a prompt


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=2, help="DPL passes per step (DPL: 21)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (a multiple of 64)")
    parser.add_argument("--variant", choices=VARIANTS, help="measure one variant in this process")
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.iterations, args.size)))
        return
    results = {}
    for variant in VARIANTS:
        command = [sys.executable, "-m", "bench.prompt_learning", "--variant", variant, "--iterations", str(args.iterations), "--size", str(args.size)]
        done = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
        r = results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{variant:9s} step wall {r['step_seconds'][-1]:.1f} s, process CPU {r['cpu_seconds'][-1]:.1f} s   memory before "
              f"sampling {r['before_bytes'] / 2**20:.0f} MiB, peak during sampling +{r['peak_bytes'] / 2**20:.0f} MiB   ({r['device']})")
    for learned, base in (("on", "off"), ("maskfree", "dual")):
        on, off = results[learned], results[base]
        per_pass = (on["cpu_seconds"][-1] - off["cpu_seconds"][-1]) / max(1, args.iterations)
        print(f"{learned} vs {base}: x{on['cpu_seconds'][-1] / off['cpu_seconds'][-1]:.1f} CPU per step with {args.iterations} passes, "
              f"{per_pass:.1f} CPU s per pass; with DPL's 21 passes about {off['cpu_seconds'][-1] + 21 * per_pass:.0f} CPU s per step; "
              f"peak memory +{(on['peak_bytes'] - off['peak_bytes']) / 2**20:.0f} MiB")
    replaced, dual = results["replaced"], results["dual"]
    print(f"replaced vs dual: x{replaced['cpu_seconds'][-1] / dual['cpu_seconds'][-1]:.2f} CPU, "
          f"x{replaced['step_seconds'][-1] / dual['step_seconds'][-1]:.2f} wall per step; peak memory "
          f"{(replaced['peak_bytes'] - dual['peak_bytes']) / 2**20:+.0f} MiB")


if __name__ == "__main__":
    main()
