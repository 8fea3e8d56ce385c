"""Cost of region-guided joint attention on Flux: seconds per sampling step, patched vs plain, and peak memory.

Random weights at the released Flux width (hidden 3072, 24 heads, T5 text width 4096, 256 text tokens) with a
reduced depth (``--double`` / ``--single`` of the released 19 / 38 blocks; default 1 + 1), 512x512 (64x64
latent: 1024 image tokens), CFG 1 with Flux guidance 3.5 (one row per step, as Flux dev is sampled), 2 objects.
Variants, interleaved round by round so drift hits all alike:

- plain: the unpatched model on the same target conditioning (the base prompt);
- joint: Region-Guided Joint Attention (``region`` mode), the routing bias on every double and single block;
- joint + blend: the same and Latent Background Blend's noise mask.

Prints, for each variant, the fastest wall-clock s/step, the fastest CPU seconds per step (the work done, which
other processes on a shared machine disturb less than the wall clock) and the median over rounds of the
per-round ratio to plain (the goal is <= 1.10), then the peak resident memory of one step of each variant (the
kernel's high-water mark reset before the step: the weights plus what the step adds). On the CPU in fp32, as
harness/random_models.py builds its models.

Then one joint attention call alone, without and with the bias (the only computation the patch adds to), and the
two ``image_attention`` modes side by side on the tiny test Flux (tests/comfy_nodes/test_flux.py's shape): after
4 steps with the moon's prompt changed, how much the wolf's region and the background moved, as a fraction of
how much the moon's region moved (0 = isolated; the unpatched model for comparison).

    python3 -m bench.flux_step [--size 512] [--rounds 3] [--double 1] [--single 1]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness import comfy_env

from .rebalance_step import peak_rss_gib

EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"
VARIANTS = ("plain", "joint", "joint + blend")


def setup():
    comfy_env.prepare_comfy()
    comfy_env.register_pack()


def build(size: int, double: int, single: int):
    """(variants {name: (model, noise mask)}, target conditioning, source latent)."""
    import torch

    from harness import random_models
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    random_models.FLUX_SHAPES["reduced"].update(depth=double, depth_single_blocks=single)
    plain = random_models.flux("reduced")
    target, _, _ = ObjectRestrictedEncodeFlux.execute(random_models.flux_clip("reduced"), EDITS, "")
    target = [[target[0][0], dict(target[0][1], guidance=3.5)]]
    masks = torch.zeros(2, size, size)
    masks[0, : size // 2, : size // 2] = 1
    masks[1, size // 2 :, size // 3 :] = 1
    latent = torch.randn(1, 16, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    joint, = RegionGuidedJointAttention.execute(plain, target, masks)
    blended, joint_blend = LatentBackgroundBlend.execute({"samples": latent}, masks, joint)
    variants = {"plain": (plain, None), "joint": (joint, None), "joint + blend": (joint_blend, blended["noise_mask"])}
    return variants, target, latent


def step_seconds(model, noise_mask, target, latent) -> tuple[float, float]:
    """(wall-clock seconds, CPU seconds of this process) of one sampling step."""
    import comfy.sample
    import torch

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    wall, cpu = time.perf_counter(), time.process_time()
    comfy.sample.sample(model, noise, 1, 1.0, "euler", "simple", target, target, latent, denoise=1.0, noise_mask=noise_mask,
                        seed=0, disable_pbar=True)
    return time.perf_counter() - wall, time.process_time() - cpu


def step_times(variants, target, latent, rounds: int) -> dict:
    import torch

    with torch.no_grad():
        for model, mask in variants.values():  # warm-up: model load, bias caches, first-call allocations
            step_seconds(model, mask, target, latent)
        times = {name: [] for name in variants}
        for round_index in range(rounds):
            for name, (model, mask) in variants.items():
                times[name].append(step_seconds(model, mask, target, latent))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s ({v[-1][1]:.2f} CPU s)" for k, v in times.items()), flush=True)
    return times


def step_peaks(variants, target, latent) -> dict:
    """Peak resident memory (GiB) of one step of each variant, the high-water mark reset just before it (Linux)."""
    import torch

    peaks = {}
    with torch.no_grad():
        for name, (model, mask) in variants.items():
            Path("/proc/self/clear_refs").write_text("5")
            step_seconds(model, mask, target, latent)
            peaks[name] = peak_rss_gib()
    return peaks


def attention_kernel(size: int, repeats: int = 5) -> tuple[float, float]:
    """Fastest seconds of one joint attention call at the released shape (24 heads of 128), without and with the bias."""
    import torch
    import torch.nn.functional as F

    tokens = 256 + (size // 16) ** 2
    q, k, v = (torch.randn(1, 24, tokens, 128, generator=torch.Generator().manual_seed(i)) for i in range(3))
    bias = torch.zeros(1, 1, tokens, tokens)
    bias[..., : tokens // 3] = float("-inf")
    fastest = []
    for mask in (None, bias):
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            times.append(time.perf_counter() - started)
        fastest.append(min(times))
    return fastest[0], fastest[1]


def image_attention_leak(steps: int = 4) -> dict:
    """{mode: (wolf region, background) change / moon region change} when the moon's prompt changes, tiny Flux."""
    import comfy.sample
    import torch

    from harness import random_models
    from leakfree_edit.masking.token_grid import token_regions
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    clip, plain = random_models.flux_clip(), random_models.flux()
    masks = torch.zeros(2, 128, 128)
    masks[0, :64, :48], masks[1, 64:, 64:] = 1, 1
    pixels = token_regions(masks, 2, 16, 16, 2)[0].view(8, 8).repeat_interleave(2, 0).repeat_interleave(2, 1)
    latent = torch.randn(1, 16, 16, 16, generator=torch.Generator().manual_seed(3))
    leaks = {}
    for mode in ("region", "all", "unpatched"):
        outs = []
        for edits in (EDITS, EDITS.replace("moon made of gold", "moon made of green cheese")):
            target, _, _ = ObjectRestrictedEncodeFlux.execute(clip, edits, "")
            model = plain if mode == "unpatched" else RegionGuidedJointAttention.execute(plain, target, masks, mode)[0]
            noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                outs.append(comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", target, target, latent, seed=0, disable_pbar=True))
        moved = [float((outs[0] - outs[1])[..., pixels == region].abs().mean()) for region in (1, 0, 2)]
        leaks[mode] = (moved[0] / moved[2], moved[1] / moved[2])
    return leaks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--double", type=int, default=1, help="double blocks (released: 19)")
    parser.add_argument("--single", type=int, default=1, help="single blocks (released: 38)")
    args = parser.parse_args(argv)
    setup()
    import torch

    variants, target, latent = build(args.size, args.double, args.single)
    times = step_times(variants, target, latent, args.rounds)
    print(f"\nFlux width 3072, {args.double} double + {args.single} single blocks, {args.size}x{args.size}, 2 objects, CFG 1, "
          f"{args.rounds} rounds, torch {torch.__version__}, CPU fp32, {torch.get_num_threads()} threads")
    plain_wall, plain_cpu = (min(v[i] for v in times["plain"]) for i in (0, 1))
    for name, values in times.items():
        ratios = [wall / plain for (wall, _), (plain, _) in zip(values, times["plain"])]
        fastest, cpu = min(v[0] for v in values), min(v[1] for v in values)
        print(f"  {name:14s} fastest {fastest:6.2f} s/step ({fastest / plain_wall:.3f}x plain), {cpu:6.2f} CPU s/step "
              f"({cpu / plain_cpu:.3f}x), median per-round ratio {statistics.median(ratios):.3f}")
    peaks = step_peaks(variants, target, latent)
    print("  peak RSS of one step: " + ", ".join(f"{k} {v:.2f} GiB" for k, v in peaks.items()))
    tokens = 256 + (args.size // 16) ** 2
    print(f"  the routing bias: {tokens}x{tokens} per mask set, {tokens * tokens * 4 / 2**20:.1f} MiB in fp32")
    unmasked, masked = attention_kernel(args.size)
    print(f"  one joint attention call ({tokens} tokens, 24 heads of 128): {unmasked:.3f} s plain, {masked:.3f} s with the bias "
          f"({masked / unmasked:.2f}x); {args.double + args.single} such calls per step")
    print("image_attention modes, tiny Flux, 4 steps, the moon's prompt changed: change / the moon region's change")
    for mode, (wolf, background) in image_attention_leak().items():
        print(f"  {mode:9s} wolf region {wolf:.2e}, background {background:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
