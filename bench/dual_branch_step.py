"""Step time and peak memory of the Dual-Branch Edit Guider vs plain single-branch img2img.

The full SD1.5 UNet shape (random weights, ComfyUI's own classes) at 512x512 (64x64 latent), the
LCM sampler, 2 steps per variant, target CFG 2 / source CFG 1 as ALE-Edit runs it:

- plain: ComfyUI's CFGGuider, target + negative (2 rows per UNet call);
- dual, locked: the guider while the self-attention lock is on (target cond + uncond, source
  cond + uncond: 4 rows, the target uncond rows need their CFG half's source rows);
- dual, unlocked: after the lock (3 rows: the source branch at CFG 1 has no uncond row).

Method: every variant runs in its own process, so peaks do not mask each other. Time: wall time
and process CPU time (all threads; steadier than wall time on a shared machine) of each guider
call (one UNet call + the DDCM arithmetic); the ratios use the second step (the first pays
one-off allocations). Memory: on CUDA, torch.cuda.max_memory_allocated minus the memory
allocated before sampling; on the CPU (Linux), the kernel's peak-RSS mark is reset to the current
RSS just before sampling (writing 5 to /proc/self/clear_refs) and read back after it (VmHWM in
/proc/self/status): the peak RSS growth during sampling, with the model, prompts and latent
already built, i.e. the activations' peak, the weights excluded (the same in every variant).

    python3 -m bench.dual_branch_step            # all variants, prints the ratios
"""
from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from pipelines.comfyui import ROOT

VARIANTS = ("plain", "dual_locked", "dual_unlocked")
STEPS = 2
EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"


def process_memory(field: str) -> int:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS, and return that RSS."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return process_memory("VmRSS")


def sd15_edit(size: int = 512) -> tuple:
    """ComfyUI loaded with the pack; the full-size random SD1.5 CLIP and UNet, EDITS encoded, an empty negative, a latent
    for a ``size``² image."""
    from harness import comfy_env

    comfy_env.prepare_comfy()
    comfy_env.register_pack()
    import torch

    from harness import random_models
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip, model = random_models.clip("sd15"), random_models.unet("sd15", "full")
    target, source, plan = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    cond, pooled = clip.encode_from_tokens(clip.tokenize(""), return_pooled=True)
    latent = torch.randn(1, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(0))
    return clip, model, target, source, plan, [[cond, {"pooled_output": pooled}]], latent


def measure(variant: str) -> dict:
    clip, model, target, source, _, negative, latent = sd15_edit()
    import comfy.samplers
    import torch

    from leakfree_edit.nodes.dual_branch import DualBranchGuider

    if variant == "plain":
        guider = comfy.samplers.CFGGuider(model)
        guider.set_conds(target, negative)
        guider.set_cfg(2.0)
    else:
        schedule = "color" if variant == "dual_locked" else "custom"
        guider, = DualBranchGuider.execute(model, source, target, negative, {"samples": latent}, 1.0, 2.0, schedule, 0.0)
        if variant == "dual_locked":
            guider.schedule = 2.0  # keep the lock on in both steps, so the warm second step is a locked one

    return timed_sample(guider, model, latent, variant, torch.no_grad)


def timed_sample(guider, model, latent, variant: str, grad_mode, steps: int = STEPS, sampler: str = "lcm", scheduler: str = "sgm_uniform") -> dict:
    """Sample ``steps`` steps with ``guider`` under ``grad_mode()``: wall and CPU seconds per guider call, peak memory."""
    import comfy.samplers
    import torch

    times, cpu_times = [], []
    predict = guider.predict_noise

    def timed(*args, **kwargs):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = predict(*args, **kwargs)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        return out

    guider.predict_noise = timed
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), scheduler, steps)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(1))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = reset_peak_rss()
    with grad_mode():
        guider.sample(noise, latent, comfy.samplers.ksampler(sampler), sigmas, disable_pbar=True, seed=1)
    peak = torch.cuda.max_memory_allocated() if cuda else process_memory("VmHWM")
    return {"variant": variant, "step_seconds": times, "cpu_seconds": cpu_times, "peak_bytes": peak - before, "before_bytes": before,
            "device": "cuda" if cuda else "cpu"}


def main():
    if len(sys.argv) == 2:
        if sys.argv[1] not in VARIANTS:
            raise SystemExit(__doc__ + f"\n    python3 -m bench.dual_branch_step VARIANT    # one of {', '.join(VARIANTS)}, in this process")
        print(json.dumps(measure(sys.argv[1])))
        return
    results = {}
    for variant in VARIANTS:
        done = subprocess.run([sys.executable, "-m", "bench.dual_branch_step", variant], capture_output=True, text=True, check=True, cwd=ROOT)
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        r = results[variant]
        print(f"{variant:14s} steps wall {', '.join(f'{t:.2f}' for t in r['step_seconds'])} s, process CPU "
              f"{', '.join(f'{t:.2f}' for t in r['cpu_seconds'])} s   memory before sampling {r['before_bytes'] / 2**20:.0f} MiB, "
              f"peak activations {r['peak_bytes'] / 2**20:.0f} MiB   ({r['device']})")
    plain = results["plain"]
    for variant in VARIANTS[1:]:
        r = results[variant]
        print(f"{variant:14s} time x{r['step_seconds'][-1] / plain['step_seconds'][-1]:.2f} wall, "
              f"x{r['cpu_seconds'][-1] / plain['cpu_seconds'][-1]:.2f} CPU (warm step)   "
              f"memory x{r['peak_bytes'] / plain['peak_bytes']:.2f} of plain's activations, "
              f"x{(r['before_bytes'] + r['peak_bytes']) / (plain['before_bytes'] + plain['peak_bytes']):.2f} in total "
              f"(+{(r['peak_bytes'] - plain['peak_bytes']) / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
