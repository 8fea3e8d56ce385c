"""Seconds per sampling step: plain img2img vs. the patched model (ORE + RGB-CAM + background blend).

Full SD1.5 UNet shape (random weights), 512x512 (64x64 latent), CFG 7 (batch of cond + uncond),
N = 1, 2, 3 objects, all in one process, variants interleaved round by round so drift hits all alike.
Prints the median step time per variant and the patched/plain ratio (goal at N = 3: <= 1.05).

    python3 -m bench.step_time [--size 512] [--steps 2] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from harness import comfy_env

EDITS = ["wolf -> brown-colored goat", "moon -> moon made of gold", "mountain -> snowy volcano"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    comfy_env.prepare_comfy()
    comfy_env.register_pack()

    import comfy.sample
    import torch

    from harness import random_models
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    torch.set_grad_enabled(False)
    side = args.size // 8
    clip, base = random_models.clip("sd15"), random_models.unet("sd15", "full")
    negative = [[clip.encode_from_tokens(clip.tokenize(""), return_pooled=False), {}]]
    latent = torch.randn(1, 4, side, side, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(3, args.size, args.size)
    third = args.size // 3
    for i in range(3):
        masks[i, :, i * third : (i + 1) * third] = 1

    variants = {}
    plain_target, _, _ = ObjectRestrictedEncode.execute(clip, "\n".join(EDITS), "object")
    variants["plain"] = (base, plain_target, None)
    for n in (1, 2, 3):
        target, _, _ = ObjectRestrictedEncode.execute(clip, "\n".join(EDITS[:n]), "object")
        model, = RegionGuidedCrossAttention.execute(base, target, masks[:n])
        blended, model = LatentBackgroundBlend.execute({"samples": latent}, masks[:n], model)
        variants[f"N={n}"] = (model, target, blended["noise_mask"])

    def step_seconds(model, positive, noise_mask) -> float:
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
        started = time.perf_counter()
        comfy.sample.sample(model, noise, args.steps, 7.0, "euler", "normal", positive, negative, latent,
                            denoise=0.8, noise_mask=noise_mask, seed=0, disable_pbar=True)
        return (time.perf_counter() - started) / args.steps

    step_seconds(*variants["plain"])  # warm-up: loads the model, fills allocator caches
    times = {name: [] for name in variants}
    for round_index in range(args.rounds):
        for name, variant in variants.items():
            times[name].append(step_seconds(*variant))
        print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    plain = statistics.median(times["plain"])
    print(f"\nSD1.5 full UNet, {args.size}x{args.size}, CFG 7, {args.steps} steps x {args.rounds} rounds, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:>6}: {median:.3f} s/step   ratio {median / plain:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
