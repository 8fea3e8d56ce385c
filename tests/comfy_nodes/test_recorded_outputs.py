"""Every node's outputs on the random-weight fixtures, bit for bit as recorded: a restructuring may not change them.

    PYTHONPATH=. python3 tests/comfy_nodes/test_recorded_outputs.py --record   # in the pack's folder: rewrite tests/comfy_nodes/data/recorded_outputs.json

Each case runs the pack's nodes by their class keys as ComfyUI's executor calls them (``getattr(node(),
node.FUNCTION)``, which serves V1 and V3 nodes alike), then samples with ComfyUI's own sampler where the
node's output is a model or a guider. What is recorded is each output's shape and the SHA-256 of its float32
bytes. Float results depend on the CPU's vector kernels and thread count, so the cases run in a fresh process
with torch's, oneDNN's and MKL's kernels pinned to AVX2 and 2 threads (``PINNED``): the same bits on any x86-64
machine with AVX2 (recorded on an AVX2-only machine, reproduced on an AVX-512 one); a case that differs names itself.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from pipelines.comfyui import ROOT

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "OMP_NUM_THREADS": "2"}
RECORDED = Path(__file__).with_name("data") / "recorded_outputs.json"
LATENT_HW = (12, 16)


def run_node(nodes: dict, key: str, **inputs) -> tuple:
    node = nodes[key]
    return tuple(getattr(node(), node.FUNCTION)(**inputs))


def sample(model, positive, negative, latent, steps=2, cfg=3.0, noise_mask=None, sampler="euler"):
    import comfy.sample

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, "normal", positive, negative, latent,
                               denoise=1.0, noise_mask=noise_mask, seed=0, disable_pbar=True)


def source_latent(batch=1):
    return torch.randn(batch, 4, *LATENT_HW, generator=torch.Generator().manual_seed(5))


def fingerprint(tensor: torch.Tensor) -> dict:
    data = tensor.detach().float().contiguous().cpu().numpy().tobytes()
    return {"shape": list(tensor.shape), "sha256": hashlib.sha256(data).hexdigest()}


def outputs(nodes: dict, models) -> dict[str, dict]:
    """Name -> fingerprint of every recorded output."""
    from harness.editing import EDITS, encode, object_masks
    from harness.gsam_models import FixedDetector, tiny_sam
    from leakfree_edit.masking.sam import SamSegmenter

    out: dict[str, torch.Tensor] = {}
    clip, unet = models.clip(), models.unet()
    target, source, plan = run_node(nodes, "LeakFreeObjectRestrictedEncode", clip=clip, edits=EDITS, eos_mode="object")
    out["encode.target"], out["encode.source"] = target[0][0], source[0][0]
    payload = next(v for k, v in target[0][1].items() if k != "pooled_output")
    for name in ("keys", "substituted", "objects", "own"):
        out[f"encode.ore.{name}"] = getattr(payload.embeddings, name)
    xl_target, _, _ = run_node(nodes, "LeakFreeObjectRestrictedEncode", clip=models.clip("sdxl"), edits=EDITS, eos_mode="naive")
    out["encode.sdxl.target"], out["encode.sdxl.pooled"] = xl_target[0][0], xl_target[0][1]["pooled_output"]

    drawn = object_masks(96, 128)
    image = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(2))
    masks, background, preview = run_node(nodes, "LeakFreeObjectMasksPainted", edit_plan=plan, mask_1=drawn[0:1],
                                          mask_2=drawn[1:2], dilation_percent=4.0, image=image)
    out.update({"painted.masks": masks, "painted.background": background, "painted.preview": preview})

    negative, latent = encode(clip, ""), source_latent()
    regional, = run_node(nodes, "LeakFreeRegionGuidedCrossAttention", model=unet, target=target, object_masks=masks,
                         isolation="ale", start_percent=0.0, end_percent=1.0)
    blended, blend_model = run_node(nodes, "LeakFreeLatentBackgroundBlend", samples={"samples": latent}, object_masks=masks,
                                    model=regional, end_percent=0.8, feather=4)
    sampled = sample(blend_model, target, negative, latent, noise_mask=blended["noise_mask"])
    pasted, = run_node(nodes, "LeakFreeLatentBackgroundPaste", samples=dict(blended, samples=sampled), source={"samples": latent})
    out["rgbcam.ale.blended"], out["rgbcam.ale.pasted"] = sampled, pasted["samples"]

    strict, = run_node(nodes, "LeakFreeRegionGuidedCrossAttention", model=unet, target=target, object_masks=masks,
                       isolation="strict", start_percent=0.1, end_percent=0.9)
    out["rgbcam.strict"] = sample(strict, target, negative, latent)
    xl_unet = models.unet("sdxl")
    xl_masks = object_masks(8 * 12, 8 * 10)  # the shape of its latent: masks of another shape are refused while sampling
    xl_regional, = run_node(nodes, "LeakFreeRegionGuidedCrossAttention", model=xl_unet, target=xl_target, object_masks=xl_masks,
                            isolation="ale", start_percent=0.0, end_percent=1.0)
    out["rgbcam.sdxl"] = sample(xl_regional, xl_target, encode(models.clip("sdxl"), ""), torch.randn(1, 4, 12, 10, generator=torch.Generator().manual_seed(6)))

    rebalanced, = run_node(nodes, "LeakFreeSourceDominanceRebalance", model=regional, boost=2.0, sink_scale=0.8, binding=2.0,
                           surroundings=0.5, start_percent=0.0, end_percent=1.0)
    out["rebalance"] = sample(rebalanced, target, negative, latent)
    anchored, = run_node(nodes, "LeakFreeRegionAnchoring", model=regional, strength=0.05, steps_fraction=0.5, iterations=1)
    out["anchoring"] = sample(anchored, target, negative, latent)

    found = run_node(nodes, "LeakFreeMasksFromAttention", model=unet, clip=clip, edit_plan=plan, samples={"samples": latent},
                     timesteps=2, refine=0.5, threshold=0.0, dilation_percent=2.0, seed=0)
    out["from_attention.masks"], out["from_attention.preview"] = found[0], found[2]

    guider, = run_node(nodes, "LeakFreeDualBranchGuider", model=regional, source=source, target=target, negative=negative,
                       source_latent={"samples": latent}, source_cfg=1.0, target_cfg=2.0, self_attention_schedule="object",
                       custom_schedule=0.5, object_masks=masks, blend_end_percent=1.0, feather=0)
    import comfy.samplers

    sigmas = comfy.samplers.calculate_sigmas(regional.get_model_object("model_sampling"), "simple", 3)
    torch.manual_seed(0)
    out["dual_branch"] = guider.sample(torch.randn(latent.shape, generator=torch.Generator().manual_seed(0)), latent,
                                       comfy.samplers.ksampler("lcm"), sigmas, disable_pbar=True, seed=0)

    torch.manual_seed(0)
    segmenter = SamSegmenter(tiny_sam())
    detector = FixedDetector({"wolf": [[10, 10, 60, 50]], "moon": [[70, 40, 120, 90]]})
    photo = torch.rand(1, 96, 128, 3, generator=torch.Generator().manual_seed(3))
    grounded = run_node(nodes, "LeakFreeObjectMasksGroundedSAM", image=photo, edit_plan=plan, detector=detector, segmenter=segmenter,
                        box_threshold=0.45, text_threshold=0.4, dilation_percent=4.0, on_missing="error", instances="all")
    out["grounded_sam.masks"], out["grounded_sam.preview"] = grounded[0], grounded[2]
    return {name: fingerprint(tensor) for name, tensor in out.items()}


def pinned_outputs() -> dict[str, dict]:
    """:func:`outputs` computed in a fresh process under ``PINNED``."""
    env = {**os.environ, **PINNED, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, __file__, "--print"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_outputs_are_bit_for_bit_as_recorded():
    recorded = json.loads(RECORDED.read_text())
    now = pinned_outputs()
    assert sorted(now) == sorted(recorded)
    changed = [name for name in now if now[name] != recorded[name]]
    assert not changed, f"outputs differ from the recording: {changed}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--record"]:
        RECORDED.write_text(json.dumps(pinned_outputs(), indent=1) + "\n")
        print(f"wrote {RECORDED}")
    elif sys.argv[1:] == ["--print"]:
        from harness import comfy_env

        comfy_env.prepare_comfy()
        comfy_env.register_pack()
        from harness.editing import pack_node_classes
        from harness.random_models import RandomModels

        print(json.dumps(outputs(pack_node_classes(), RandomModels())))
