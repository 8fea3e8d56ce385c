"""One command for a GPU check: what the pack's patches cost per sampling step against the plain model, the peak memory
of a step, and which of torch's SDPA kernels the rows the pack routes ran on (flash, memory-efficient, cuDNN, math:
read from the profiler, under a profiler scope around each of the pack's own attention calls).

Random weights of ComfyUI's own classes, ComfyUI's real samplers, two objects, one sampling step per measurement,
the variants interleaved round by round (the fastest of the rounds is the figure):

- SDXL: a plain KSampler step (CFG 7: cond and uncond in one call), the single branch (Region-Guided Cross-Attention +
  Latent Background Blend), with Source-Dominance Rebalance (boost 2, sink 0.5, binding 2, surroundings 1), and the
  dual branch (Dual-Branch Edit Guider on the region-guided model: target and source branches, target CFG 2, the
  structure lock on, lcm);
- Flux: a plain step (CFG 1, Flux guidance 3.5) and Region-Guided Joint Attention.

On a GPU (the default there): the released SDXL UNet at 1024x1024 and Flux at the released width with 19 double and
38 single blocks at 1024x1024, in bf16. On the CPU (the default without one) the same code at small sizes: SDXL's
layout at a tiny width at 512x512, Flux at the released width with 1 + 1 blocks at 256x256, fp32 (``--sdxl``,
``--size``, ``--flux-blocks``, ``--flux-size``, ``--dtype`` change them). Peak memory is torch's allocator peak on
the GPU, the process's resident high-water mark (reset before each step) on the CPU.

    python3 -m bench.gpu [--rounds 3] [--sdxl full|tiny] [--size 1024] [--flux-blocks 19 38] [--flux-size 1024] [--dtype bf16]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
from pathlib import Path

from harness import comfy_env

KERNELS = {  # torch's SDPA implementations, by the aten op the dispatcher picks
    "_scaled_dot_product_flash_attention": "flash",
    "_scaled_dot_product_flash_attention_for_cpu": "flash (CPU)",
    "_scaled_dot_product_efficient_attention": "memory-efficient",
    "_scaled_dot_product_cudnn_attention": "cuDNN",
    "_scaled_dot_product_attention_math": "math",
    "_scaled_dot_product_fused_attention_overrideable": "fused (backend)",
}
ROUTED_SCOPE = "leakfree routed attention"


def setup():
    comfy_env.prepare_comfy()
    comfy_env.register_pack()


@contextlib.contextmanager
def routed_scopes():
    """Each of the pack's own attention calls (RGB-CAM, the self-attention region bias, the Flux routing) inside a
    profiler scope, so the kernels under it are the routed rows'."""
    import torch

    from leakfree_edit.attention import joint_attention, region_attention, self_attention

    patched = [(region_attention, "rgb_cam"), (self_attention, "biased_attention"), (joint_attention, "sdpa_attention")]
    originals = [getattr(module, name) for module, name in patched]

    def scoped(function):
        def run(*args, **kwargs):
            with torch.profiler.record_function(ROUTED_SCOPE):
                return function(*args, **kwargs)
        return run

    for (module, name), original in zip(patched, originals):
        setattr(module, name, scoped(original))
    try:
        yield
    finally:
        for (module, name), original in zip(patched, originals):
            setattr(module, name, original)


def on_device(patcher, device):
    """The model to be loaded on ``device`` by ComfyUI's model management (random_models builds for the CPU)."""
    patcher.load_device = device
    return patcher


def sdxl_variants(shape: str, size: int, dtype, device) -> tuple[dict, int]:
    """{name: one-step function} for SDXL, and the latent's side."""
    import comfy.samplers
    import torch

    from harness import random_models
    from harness.editing import EDITS, encode, sample
    from leakfree_edit.nodes.background_blend import LatentBackgroundBlend
    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.rebalance import SourceDominanceRebalance
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    from .rebalance_step import two_masks

    clip = random_models.clip("sdxl")
    plain = on_device(random_models.unet("sdxl", shape, dtype=dtype), device)
    target, source, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    negative = encode(clip, "")
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    masks = two_masks(size)
    regional, = RegionGuidedCrossAttention.execute(plain, target, masks)
    blend, single = LatentBackgroundBlend.execute({"samples": latent}, masks, regional)
    _, rebalanced = LatentBackgroundBlend.execute({"samples": latent},
                                                  masks, SourceDominanceRebalance.execute(regional, 2.0, 0.5, 2.0, 1.0)[0])
    guider, = DualBranchGuider.execute(regional, source, target, negative, {"samples": latent}, source_cfg=1.0, target_cfg=2.0,
                                       self_attention_schedule="color")  # the lock on in the measured step
    lcm = comfy.samplers.ksampler("lcm")

    def ksampler(model, mask=None):
        return lambda: sample(model, target, negative, latent, 7.0, steps=1, noise_mask=mask, seed=1)

    def dual_branch():
        sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", 1)
        guider.sample(torch.randn(latent.shape), latent, lcm, sigmas, disable_pbar=True, seed=0)

    return {"SDXL plain": ksampler(plain), "SDXL single branch": ksampler(single, blend["noise_mask"]),
            "SDXL + rebalance": ksampler(rebalanced, blend["noise_mask"]), "SDXL dual branch": dual_branch}, size // 8


def flux_variants(blocks: tuple[int, int], size: int, dtype, device) -> tuple[dict, int]:
    import torch

    from harness import random_models
    from harness.editing import EDITS, sample
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    from .rebalance_step import two_masks

    random_models.FLUX_SHAPES["reduced"].update(depth=blocks[0], depth_single_blocks=blocks[1])
    plain = on_device(random_models.flux("reduced", dtype=dtype), device)
    target, _, _ = ObjectRestrictedEncodeFlux.execute(random_models.flux_clip("reduced"), EDITS, "")
    target = [[target[0][0], dict(target[0][1], guidance=3.5)]]
    latent = torch.randn(1, 16, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    joint, = RegionGuidedJointAttention.execute(plain, target, two_masks(size))
    step = lambda model: lambda: sample(model, target, target, latent, 1.0, steps=1, seed=1)
    return {"Flux plain": step(plain), "Flux joint attention": step(joint)}, size // 8


def synchronized(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device) -> float:
    synchronized(device)
    started = time.perf_counter()
    step()
    synchronized(device)
    return time.perf_counter() - started


def peak_gib(step, device) -> float:
    """Peak memory of one step: torch's allocator peak on a GPU, the resident high-water mark on the CPU (Linux)."""
    import torch

    from .rebalance_step import peak_rss_gib

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device) / 2**30
    Path("/proc/self/clear_refs").write_text("5")
    step()
    return peak_rss_gib()


def routed_kernels(step) -> collections.Counter:
    """The SDPA kernels of one step that ran inside the pack's routed calls, and how many times."""
    import torch

    with routed_scopes(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    found = collections.Counter()
    for event in profile.events():
        kernel = KERNELS.get(event.name.removeprefix("aten::"))
        parent = event.cpu_parent
        while kernel is not None and parent is not None and parent.name != ROUTED_SCOPE:
            parent = parent.cpu_parent
        if kernel is not None and parent is not None:
            found[kernel] += 1
    return found


def measure(variants: dict, rounds: int, device) -> dict:
    import torch

    with torch.no_grad():
        for step in variants.values():  # warm-up: model load, mask and bias caches, first-call allocations
            step()
        times = {name: [] for name in variants}
        for _ in range(rounds):
            for name, step in variants.items():
                times[name].append(timed(step, device))
        return {name: {"seconds": min(times[name]), "peak": peak_gib(step, device), "kernels": routed_kernels(step)}
                for name, step in variants.items()}


def main(argv=None) -> int:
    import torch

    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sdxl", choices=("full", "tiny"), default="full" if cuda else "tiny")
    parser.add_argument("--size", type=int, default=1024 if cuda else 512, help="SDXL's image side in px")
    parser.add_argument("--flux-blocks", type=int, nargs=2, default=(19, 38) if cuda else (1, 1), metavar=("DOUBLE", "SINGLE"))
    parser.add_argument("--flux-size", type=int, default=1024 if cuda else 256)
    parser.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="bf16" if cuda else "fp32")
    parser.add_argument("--skip", choices=("sdxl", "flux"), action="append", default=[])
    args = parser.parse_args(argv)
    setup()
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    device = torch.device("cuda" if cuda else "cpu")
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}, torch {torch.__version__}, {args.dtype}, {args.rounds} rounds (fastest), one sampling step per figure")
    rows = []
    if "sdxl" not in args.skip:
        variants, side = sdxl_variants(args.sdxl, args.size, dtype, device)
        rows.append((f"SDXL {args.sdxl} UNet, {args.size}x{args.size} (latent {side}x{side}), CFG 7", measure(variants, args.rounds, device)))
    if "flux" not in args.skip:
        variants, side = flux_variants(tuple(args.flux_blocks), args.flux_size, dtype, device)
        title = f"Flux width 3072, {args.flux_blocks[0]} + {args.flux_blocks[1]} blocks, {args.flux_size}x{args.flux_size} (latent {side}x{side}), CFG 1"
        rows.append((title, measure(variants, args.rounds, device)))
    print("\n| variant | s/step | x plain | peak GiB | routed rows' SDPA kernels |\n|---|---|---|---|---|")
    for title, results in rows:
        print(f"| **{title}** | | | | |")
        plain = next(iter(results.values()))["seconds"]
        for name, result in results.items():
            kernels = ", ".join(f"{kernel} x{count}" for kernel, count in result["kernels"].most_common()) or "none (no routed rows)"
            print(f"| {name} | {result['seconds']:.3f} | {result['seconds'] / plain:.2f} | {result['peak']:.2f} | {kernels} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
