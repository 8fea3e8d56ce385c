"""Cost of the leakage controls: step time of RGB-CAM + rebalancing (+ binding) vs RGB-CAM alone,
seconds per anchored step, and peak memory of binding at 1024 px on the SDXL shape.

Random weights at the released UNet shapes, CPU or GPU, all variants interleaved round by round.

1. SD1.5 full shape, 512x512 (64x64 latent), CFG 7 (cond + uncond in one UNet call), 2 objects:
   fastest (and median) seconds per sampling step of RGB-CAM alone, + rebalance (boost 2, sink 0.5),
   + rebalance + binding (2.0, surroundings 1.0); ratio to RGB-CAM alone (goal <= 1.05).
2. The same model with Region Anchoring (1 iteration, every step guided): seconds per anchored step,
   and (fresh process) peak resident memory after a plain step and after an anchored step.
3. SDXL shape at 1024x1024 (128x128 latent): its largest self-attention layer (64x64 = 4096
   tokens, 640 channels, 10 heads, batch 2) alone, plain vs with binding, each in a fresh process:
   seconds and peak resident memory, next to the size an explicit HW x HW bias would take.
   ``--sdxl-unet`` times one whole SDXL UNet forward with binding instead (about 10 GiB of
   fp32 weights: needs a big machine).

    python3 -m bench.rebalance_step [--size 512] [--rounds 3] [--skip-anchoring] [--sdxl-unet]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from harness import comfy_env

EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"


def two_masks(size: int):
    import torch

    masks = torch.zeros(2, size, size)
    masks[0, : size // 2, : size // 2] = 1
    masks[1, size // 2 :, size // 3 :] = 1
    return masks


def sd15_steps(size: int, rounds: int, anchoring: bool) -> dict:
    import comfy.sample
    import torch

    from harness import random_models
    from leakfree_edit.nodes.anchoring import RegionAnchoring
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.rebalance import SourceDominanceRebalance
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    side = size // 8
    clip, base = random_models.clip("sd15"), random_models.unet("sd15", "full")
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    negative = [[clip.encode_from_tokens(clip.tokenize(""), return_pooled=False), {}]]
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    rgb_cam, = RegionGuidedCrossAttention.execute(base, target, two_masks(size))
    variants = {
        "rgb-cam": rgb_cam,
        "rgb-cam + rebalance": SourceDominanceRebalance.execute(rgb_cam, boost=2.0, sink_scale=0.5, binding=0.0)[0],
        "rgb-cam + rebalance + binding": SourceDominanceRebalance.execute(rgb_cam, boost=2.0, sink_scale=0.5, binding=2.0, surroundings=1.0)[0],
    }
    if anchoring:
        variants["rgb-cam + anchoring (1 iteration)"] = RegionAnchoring.execute(rgb_cam, strength=0.05, steps_fraction=1.0, iterations=1)[0]

    def step_seconds(model) -> float:
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
        started = time.perf_counter()
        comfy.sample.sample(model, noise, 1, 7.0, "euler", "normal", target, negative, latent, denoise=1.0, seed=0, disable_pbar=True)
        return time.perf_counter() - started

    with torch.no_grad():
        for model in variants.values():  # warm-up: model load, caches, first-call allocations
            step_seconds(model)
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, model in variants.items():
                times[name].append(step_seconds(model))
    return {name: (min(values), statistics.median(values)) for name, values in times.items()}


def sd15_anchored_memory(size: int) -> dict:
    """Peak resident memory of one plain RGB-CAM step, then of one anchored step (1 iteration), SD1.5 shape."""
    import comfy.sample
    import torch

    from harness import random_models
    from leakfree_edit.nodes.anchoring import RegionAnchoring
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip, base = random_models.clip("sd15"), random_models.unet("sd15", "full")
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    negative = [[clip.encode_from_tokens(clip.tokenize(""), return_pooled=False), {}]]
    latent = torch.zeros(1, 4, size // 8, size // 8)
    rgb_cam, = RegionGuidedCrossAttention.execute(base, target, two_masks(size))
    anchored, = RegionAnchoring.execute(rgb_cam, strength=0.05, steps_fraction=1.0, iterations=1)
    peaks = {}
    for name, model in (("rgb-cam", rgb_cam), ("anchored", anchored)):
        with torch.no_grad():
            comfy.sample.sample(model, torch.randn(latent.shape), 1, 7.0, "euler", "normal", target, negative, latent, denoise=1.0, seed=0, disable_pbar=True)
        peaks[name] = peak_rss_gib()
    return peaks


def sdxl_layer(binding: bool, repeats: int = 3) -> dict:
    """One SDXL 1024 px self-attention layer (4096 tokens, 640 channels, 10 heads), batch 2 (cond + uncond)."""
    import torch
    import torch.nn.functional as F

    from leakfree_edit.attention.rebalance import RegionBinding
    from leakfree_edit.attention.region_attention import RegionAttentionProgram
    from leakfree_edit.attention.self_attention import RegionSelfAttention

    heads, channels, side = 10, 640, 64

    def plain(q, k, v, heads, extra_options):
        b, _, inner = q.shape
        split = lambda t: t.view(b, -1, heads, inner // heads).transpose(1, 2)
        return F.scaled_dot_product_attention(split(q), split(k), split(v)).transpose(1, 2).reshape(b, -1, inner)

    class Regions:  # the binding reads only the masks (and their count) of RGB-CAM's term
        masks, count = two_masks(1024), 2

    program = RegionAttentionProgram(attention=plain)
    if binding:
        program = RegionAttentionProgram(attention=plain, cross=Regions()).with_self_bias(RegionBinding(2.0, 1.0))
    options = {"n_heads": heads, "leakfree_edit": program, "original_shape": [2, 4, 128, 128],
               "activations_shape": [2, channels, side, side], "cond_or_uncond": [1, 0], "sigmas": torch.tensor([1.0])}
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, side * side, channels, generator=generator) for _ in range(3))
    layer = RegionSelfAttention()
    with torch.no_grad():
        layer(q, k, v, dict(options))
        started = time.perf_counter()
        for _ in range(repeats):
            layer(q, k, v, dict(options))
    seconds = (time.perf_counter() - started) / repeats
    return {"seconds": seconds, "peak_rss_gib": peak_rss_gib()}


def sdxl_unet(size: int, binding: bool = True) -> dict:
    """One whole SDXL-shape UNet forward at ``size`` px with RGB-CAM (+ binding), batch 2."""
    import comfy.sample
    import torch

    from harness import random_models
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.rebalance import SourceDominanceRebalance
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip, base = random_models.clip("sdxl"), random_models.unet("sdxl", "full")
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    negative = [[clip.encode_from_tokens(clip.tokenize(""), return_pooled=False), {"pooled_output": target[0][1]["pooled_output"] * 0}]]
    model, = RegionGuidedCrossAttention.execute(base, target, two_masks(size))
    if binding:
        model, = SourceDominanceRebalance.execute(model, binding=2.0, surroundings=1.0)
    latent = torch.zeros(1, 4, size // 8, size // 8)
    started = time.perf_counter()
    with torch.no_grad():
        comfy.sample.sample(model, torch.randn(latent.shape), 1, 7.0, "euler", "normal", target, negative, latent, denoise=1.0, seed=0, disable_pbar=True)
    return {"seconds": time.perf_counter() - started, "peak_rss_gib": peak_rss_gib()}


def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM; ru_maxrss would include the parent's, kept across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def in_fresh_process(function: str, *arguments) -> dict:
    """Run ``function(*arguments)`` of this script in a new interpreter, for an honest peak RSS."""
    code = f"import sys; sys.argv = ['x']; import bench.rebalance_step as b, json; b.setup(); print(json.dumps(b.{function}(*{arguments!r})))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def setup():
    comfy_env.prepare_comfy()
    comfy_env.register_pack()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-anchoring", action="store_true")
    parser.add_argument("--sdxl-unet", action="store_true")
    args = parser.parse_args(argv)
    setup()

    steps = sd15_steps(args.size, args.rounds, not args.skip_anchoring)
    alone = steps["rgb-cam"][0]
    print(f"SD1.5 full shape, {args.size}x{args.size}, CFG 7, 2 objects, {args.rounds} steps each (min is the figure; median shows the noise):")
    for name, (fastest, median) in steps.items():
        print(f"  {name:36s} min {fastest:7.2f} s/step ({fastest / alone:.3f}x RGB-CAM alone), median {median:7.2f}")

    if not args.skip_anchoring:
        peaks = in_fresh_process("sd15_anchored_memory", args.size)
        print(f"  peak RSS, fresh process: {peaks['rgb-cam']:.2f} GiB after an RGB-CAM step, {peaks['anchored']:.2f} GiB after an anchored step")
    print("SDXL shape at 1024x1024, largest self-attention layer (4096 tokens, 640 ch, 10 heads, batch 2):")
    for binding in (False, True):
        result = in_fresh_process("sdxl_layer", binding)
        print(f"  {'binding' if binding else 'plain  '}  {result['seconds']:.3f} s/call, peak RSS {result['peak_rss_gib']:.2f} GiB")
    print(f"  (an explicit HW x HW fp32 bias for that layer would be {4096 * 4096 * 4 / 2**20:.0f} MiB per row and head)")
    if args.sdxl_unet:
        for binding in (False, True):
            result = in_fresh_process("sdxl_unet", 1024, binding)
            label = "RGB-CAM + binding" if binding else "RGB-CAM alone    "
            print(f"SDXL full UNet step at 1024x1024, {label}: {result['seconds']:.1f} s, peak RSS {result['peak_rss_gib']:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
