"""Dual-Branch Edit Guider: ALE-Edit's source + target branches in one UNet call per step (InfEdit's DDCM)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import comfy.model_sampling
import comfy.samplers

from ..attention.dual_branch import (
    SELF_ATTENTION_SCHEDULES, SOURCE_COND, SOURCE_OF, SOURCE_SLOTS, SOURCE_UNCOND, TARGET_COND, TARGET_UNCOND,
    blend_background, branch_layout, ddcm_target_x0, lock_active, source_branch_latent, step_index,
)
from ..attention.self_attention import LAYOUT_KEY
from ..masking.ops import feather as feather_mask, latent_mask
from .comfy_compat import CATEGORY, NodeInputError, install_region_program, percent_to_sigma, region_program
from .encode import ORE_KEY, ore_payload
from .region_attention import check_masks, check_model

NODE = "Dual-Branch Edit Guider"
CUSTOM = "custom"
ASPECT_TOLERANCE = 0.05  # masks may be drawn at any resolution of the same picture


@dataclass
class _Run:
    """What one sampling run of the guider tracks between model calls."""

    sigmas: torch.Tensor
    x0: torch.Tensor | None = None  # the source latent in the model's latent space, on the device
    previous_x0_hat: torch.Tensor | None = None
    blended_last_call: bool = False


class DualBranchGuider(comfy.samplers.CFGGuider):
    """Runs the target and source branches in one batched UNet call and returns DDCM's x0_hat_t.

    Slots handed to ComfyUI's ``calc_cond_batch``: target cond, source cond, target uncond (if
    target CFG != 1), source uncond (if source CFG != 1, or while the lock gives the target uncond
    rows their CFG half's source Q and K). A ``model_function_wrapper`` puts the source branch's
    latent into the source chunks and hands the :class:`BranchLayout` to the attention callables.
    """

    def __init__(self, model_patcher, source_latent, target_cfg, source_cfg, schedule, background=None, blend_sigma_end=0.0):
        super().__init__(model_patcher)
        self.source_latent = source_latent
        self.target_cfg, self.source_cfg, self.schedule = target_cfg, source_cfg, schedule
        self.background = background  # [1, 1, h, w]: 1 where the source is kept, or None
        self.blend_sigma_end = blend_sigma_end
        self.run: _Run | None = None

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, *args, **kwargs):
        if tuple(latent_image.shape) != tuple(self.source_latent.shape):
            raise NodeInputError(
                f"{NODE}: the sampler's latent_image is {tuple(latent_image.shape)} but the guider's source latent is "
                f"{tuple(self.source_latent.shape)}. Connect the same source LATENT to the guider and to SamplerCustomAdvanced."
            )
        if denoise_mask is not None:
            raise NodeInputError(
                f"{NODE}: the latent given to the sampler has a noise mask. Blend the background with the guider "
                "instead (its object_masks input; it uses the source branch's latent, as ALE-Edit does): connect the "
                "plain VAE Encode latent, not one from Latent Background Blend or Set Latent Noise Mask."
            )
        self.run = _Run(sigmas=sigmas.detach().float().cpu())
        try:
            samples = super().sample(noise, latent_image, sampler, sigmas, denoise_mask, *args, **kwargs)
            if self.background is not None and self.run.blended_last_call:
                # the last x0_hat kept the source exactly; undo the latent-format round trip's rounding
                samples = blend_background(samples, self.source_latent.to(samples), self.background.to(samples))
        finally:
            self.run = None
        return samples

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        run = self.run
        if run.x0 is None:
            run.x0 = self.inner_model.process_latent_in(self.source_latent.to(device=x.device, dtype=x.dtype))
        x_s = source_branch_latent(x, run.previous_x0_hat, run.x0)
        sigma = float(timestep.max())
        lock = lock_active(step_index(run.sigmas, sigma), len(run.sigmas) - 1, self.schedule)
        target_guided, source_guided = _uses_uncond(self.target_cfg, model_options), _uses_uncond(self.source_cfg, model_options)
        negative, slots = self.conds.get("negative"), [None] * 4
        slots[TARGET_COND], slots[SOURCE_COND] = self.conds["positive"], self.conds["source"]
        if target_guided:
            slots[TARGET_UNCOND] = negative
        if source_guided or (lock and target_guided):
            slots[SOURCE_UNCOND] = negative
        options = dict(model_options)
        options["model_function_wrapper"] = BranchBatch(x, x_s, lock, model_options.get("model_function_wrapper"))
        out = comfy.samplers.calc_cond_batch(self.inner_model, slots, x, timestep, options)
        zeros = torch.zeros_like(x)
        denoised_t = comfy.samplers.cfg_function(
            self.inner_model, out[TARGET_COND], out[TARGET_UNCOND] if target_guided else zeros, self.target_cfg, x, timestep,
            model_options=model_options, cond=slots[TARGET_COND], uncond=slots[TARGET_UNCOND])
        denoised_s = comfy.samplers.cfg_function(
            self.inner_model, out[SOURCE_COND], out[SOURCE_UNCOND] if source_guided else zeros, self.source_cfg, x_s, timestep,
            model_options=model_options, cond=slots[SOURCE_COND], uncond=slots[SOURCE_UNCOND] if source_guided else None)
        x0_hat = ddcm_target_x0(run.x0, x, x_s, denoised_t, denoised_s, timestep)
        run.blended_last_call = self.background is not None and sigma > self.blend_sigma_end
        if run.blended_last_call:
            x0_hat = blend_background(x0_hat, run.x0, self.background.to(x0_hat))
        run.previous_x0_hat = x0_hat
        return x0_hat


def _uses_uncond(cfg: float, model_options: dict) -> bool:
    """ComfyUI's rule: CFG 1 skips the unconditional rows unless disable_cfg1_optimization is set."""
    return not math.isclose(cfg, 1.0) or model_options.get("disable_cfg1_optimization", False)


class BranchBatch:
    """``model_function_wrapper`` for one model call: the source chunks get the source branch's latent,
    and the attention callables get the :class:`BranchLayout` under ``LAYOUT_KEY``."""

    def __init__(self, x_t, x_s, lock: bool, previous=None):
        self.x_t, self.x_s, self.lock, self.previous = x_t, x_s, lock, previous

    def __call__(self, apply_model, args):
        slots = list(args["cond_or_uncond"])
        rows = self.x_t.shape[0]
        if args["input"].shape != (rows * len(slots), *self.x_t.shape[1:]):
            raise NodeInputError(
                f"{NODE}: a conditioning with an area (Conditioning Set Area) reached the dual-branch batch; the "
                "branches must cover the whole latent. Use masks (object_masks, Region-Guided Cross-Attention) instead of areas."
            )
        layout = branch_layout(slots, rows, self.lock, device=self.x_t.device)
        if self.lock and any(slot in slots and partner not in slots for slot, partner in SOURCE_OF.items()):
            raise NodeInputError(
                f"{NODE}: ComfyUI split the batch into several UNet calls (not enough free memory), so the target rows "
                "could not take their source rows' queries and keys. Free memory (smaller image or batch, other models "
                "unloaded) or set self_attention_schedule to custom 0.0 to sample without the lock."
            )
        chunks = args["input"].chunk(len(slots))
        inputs = torch.cat([self.x_s if slot in SOURCE_SLOTS else chunk for slot, chunk in zip(slots, chunks)])
        c = dict(args["c"])
        c["transformer_options"] = dict(c.get("transformer_options", {}), **{LAYOUT_KEY: layout})
        args = dict(args, input=inputs, c=c)
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])


class DualBranchEditGuider:
    DESCRIPTION = (
        "ALE-Edit's dual-branch sampling (InfEdit's DDCM virtual inversion) as a GUIDER for SamplerCustomAdvanced. "
        "The source branch (source prompt, source CFG) and the target branch (target prompt, target CFG) run in ONE "
        "batched UNet call per step; the target's clean estimate is x0_hat = x0 + [(x_t - x_s) - sqrt(1-a)(eps_t - eps_s)]/sqrt(a) "
        "with x0 the source latent, and both branches are re-noised with the same noise, so with the LCM sampler "
        "each step is InfEdit's (other samplers: see docs/dual_branch.md). While (step+1)/steps < schedule, the "
        "target's self-attention uses its source rows' queries and keys (structure lock). Region-Guided "
        "Cross-Attention and the other LeakFree attention nodes act on the target's rows only. With object_masks, "
        "the background is taken from the source branch at every step (ALE-Edit's Background Blending). "
        "Connect the same source latent to SamplerCustomAdvanced's latent_image."
    )
    CATEGORY = f"{CATEGORY}/sampling"
    RETURN_TYPES = ("GUIDER",)
    OUTPUT_TOOLTIPS = ("The dual-branch guider: connect it to SamplerCustomAdvanced (LCM sampler for InfEdit's exact update).",)
    FUNCTION = "build"

    @classmethod
    def INPUT_TYPES(cls):
        presets = [*SELF_ATTENTION_SCHEDULES, CUSTOM]
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The model to sample with, after any LeakFree attention nodes and LoRAs (it is cloned, never changed). SD1.5/SDXL-style eps or v-prediction models."}),
                "source": ("CONDITIONING", {"tooltip": "The 'source' output of Object-Restricted Encode (or any prompt describing the source image)."}),
                "target": ("CONDITIONING", {"tooltip": "The 'target' output of Object-Restricted Encode (it carries the object-restricted embeddings)."}),
                "negative": ("CONDITIONING", {"tooltip": "Negative prompt for both branches' CFG (an empty prompt is usual with LCM)."}),
                "source_latent": ("LATENT", {"tooltip": "VAE Encode of the image you edit; connect the same latent to SamplerCustomAdvanced."}),
                "source_cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": "CFG of the source branch (ALE-Edit: 1)."}),
                "target_cfg": ("FLOAT", {"default": 2.0, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01, "tooltip": "CFG of the target branch (ALE-Edit: 2)."}),
                "self_attention_schedule": (presets, {"default": "object", "tooltip": "Fraction of the steps in which the target's self-attention takes the source's queries and keys, per edit type (ALE-Edit: " + ", ".join(f"{k} {v}" for k, v in SELF_ATTENTION_SCHEDULES.items()) + "); custom uses custom_schedule."}),
                "custom_schedule": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "The lock fraction when the schedule is 'custom': locked while (step+1)/steps < this; 0 never locks."}),
            },
            "optional": {
                "object_masks": ("MASK", {"tooltip": "One mask per edit line, from an Object Masks node: outside their union the source branch's latent is kept at every step. Leave empty to edit the whole image."}),
                "blend_end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Blend the background until this fraction of sampling (1.0 = every step, as ALE-Edit; the final background is then the source)."}),
                "feather": ("INT", {"default": 0, "min": 0, "max": 256, "tooltip": "Soft edge in image pixels outside the objects; 0 keeps a hard edge."}),
            },
        }

    def build(self, model, source, target, negative, source_latent, source_cfg=1.0, target_cfg=2.0,
              self_attention_schedule="object", custom_schedule=0.5, object_masks=None, blend_end_percent=1.0, feather=0):
        payload = ore_payload(target, NODE)
        check_model(model, payload.plan, NODE)
        _check_source(source)
        _check_model_sampling(model)
        latent = _source_samples(source_latent)
        schedule = custom_schedule if self_attention_schedule == CUSTOM else SELF_ATTENTION_SCHEDULES[self_attention_schedule]
        patched = model.clone()
        install_region_program(patched, region_program(patched), self_attention=True)
        background, sigma_end = None, 0.0
        if object_masks is not None:
            masks = check_masks(object_masks, payload.plan, NODE)
            _check_mask_size(masks, latent)
            union = feather_mask(masks.float().amax(dim=0, keepdim=True), feather)
            background = 1.0 - latent_mask(union, *latent.shape[-2:])
            sigma_end = percent_to_sigma(patched, blend_end_percent)
        guider = DualBranchGuider(patched, latent, target_cfg, source_cfg, schedule, background, sigma_end)
        guider.inner_set_conds({"positive": target, "negative": negative, "source": source})
        return (guider,)


def _check_source(source):
    if not source:
        raise NodeInputError(f"{NODE}: the source conditioning is empty. Connect the 'source' output of Object-Restricted Encode.")
    if any(ORE_KEY in options for _, options in source):
        raise NodeInputError(
            f"{NODE}: the 'source' input got the target conditioning (it carries the object-restricted embeddings). "
            "Connect Object-Restricted Encode's 'source' output to source and its 'target' output to target."
        )


def _check_model_sampling(model):
    sampling = model.get_model_object("model_sampling")
    if not isinstance(sampling, comfy.model_sampling.EPS):
        raise NodeInputError(
            f"{NODE}: this model samples with {type(sampling).__name__}; DDCM's virtual inversion is defined for "
            "diffusion (VP) models with eps or v prediction, such as SD1.5 and SDXL (with or without an LCM LoRA), "
            "not for flow-matching models (SD3, Flux). Sample those with an ordinary guider."
        )


def _source_samples(source_latent) -> torch.Tensor:
    samples = source_latent.get("samples") if isinstance(source_latent, dict) else None
    if samples is None or samples.ndim != 4:
        raise NodeInputError(f"{NODE}: source_latent is not an image latent. Connect the LATENT output of VAE Encode of the image you edit.")
    if not torch.count_nonzero(samples):
        raise NodeInputError(f"{NODE}: source_latent is empty (all zeros). Connect VAE Encode of the image you edit, not Empty Latent Image.")
    return samples


def _check_mask_size(masks, latent):
    (height, width), (rows, columns) = masks.shape[-2:], latent.shape[-2:]
    if abs((height / width) / (rows / columns) - 1) > ASPECT_TOLERANCE:
        raise NodeInputError(
            f"{NODE}: the object masks are {width}x{height} px but the source latent is for a {8 * columns}x{8 * rows} px "
            "image (another shape). Make the masks from the same image you VAE-encoded (resize or crop both alike)."
        )


NODE_CLASS_MAPPINGS = {"LeakFreeDualBranchGuider": DualBranchEditGuider}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeDualBranchGuider": "Dual-Branch Edit Guider (LeakFree)"}
