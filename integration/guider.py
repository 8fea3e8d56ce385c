"""ALE-Edit's dual-branch sampling as a ComfyUI guider: both branches in one batched UNet call per step (InfEdit's DDCM)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

import comfy.model_sampling
import comfy.samplers

from ..attention.dual_branch import (
    SOURCE_COND, SOURCE_OF, SOURCE_SLOTS, SOURCE_UNCOND, TARGET_COND, TARGET_UNCOND, BackgroundBlending, blend_background,
    branch_layout, ddcm_target_x0, source_branch_latent, step_index, structure_lock,
)
from ..attention.region_attention import PROGRAM_KEY
from ..attention.self_attention import LAYOUT_KEY, StructureLock
from ..masking.ops import feather as feather_mask, image_unions, latent_mask, multiscale_foreground
from .checks import ORE_KEY, check_mask_size
from .errors import NodeInputError
from .patching import percent_to_sigma


@dataclass
class SamplingRun:
    """What one sampling run of the guider tracks between model calls."""

    lock: StructureLock | None  # the structure lock's sigma window for this run's schedule, or none
    sigmas: torch.Tensor  # the run's sigmas, to tell which step a model call belongs to
    x0: torch.Tensor | None = None  # the source latent in the model's latent space, on the device
    previous_x0_hat: torch.Tensor | None = None
    blended_last_call: bool = False


class DualBranchCFGGuider(comfy.samplers.CFGGuider):
    """Runs the target and source branches in one batched UNet call and returns DDCM's x0_hat_t.

    Slots handed to ComfyUI's ``calc_cond_batch``: target cond, source cond, target uncond (if
    target CFG != 1), source uncond (if source CFG != 1, or while the lock gives the target uncond
    rows their CFG half's source Q and K). A ``model_function_wrapper`` puts the source branch's
    latent into the source chunks and hands the :class:`BranchLayout` to the attention callables.
    The structure lock is a term of the region attention program, added for each run with the sigma
    window that covers the steps ALE-Edit locks: (step + 1) / steps < schedule.

    ``start`` "noise": both branches start from the sampler's noise alone, as ALE-Edit's pipeline does
    (the sampler is given a zero latent); "img2img": from the source latent noised to the first sigma.
    """

    def __init__(self, model_patcher, source_latent, target_cfg, source_cfg, schedule, node: str,
                 background: BackgroundBlending | None = None, start: str = "noise"):
        super().__init__(model_patcher)
        self.source_latent = source_latent
        self.target_cfg, self.source_cfg, self.schedule = target_cfg, source_cfg, schedule
        self.node = node
        self.background = background
        self.start = start
        self.run: SamplingRun | None = None

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, *args, **kwargs):
        check_sampling_latents(latent_image, self.source_latent, denoise_mask, self.node)
        steps = sigmas.detach().float().cpu()
        self.run = SamplingRun(lock=structure_lock(steps, self.schedule), sigmas=steps)
        kept = self.model_options
        self.model_options = self._options_with_lock(self.run.lock)
        start = torch.zeros_like(latent_image) if self.start == "noise" else latent_image
        try:
            samples = super().sample(noise, start, sampler, sigmas, denoise_mask, *args, **kwargs)
            if self.run.blended_last_call:
                # the last x0_hat kept the source exactly; undo the latent-format round trip's rounding
                samples = blend_background(samples, self.source_latent.to(samples), self.background.mask.to(samples))
        finally:
            self.model_options, self.run = kept, None
        return samples

    def _options_with_lock(self, lock: StructureLock | None) -> dict:
        options = dict(self.model_options)
        transformer_options = dict(options["transformer_options"])
        transformer_options[PROGRAM_KEY] = transformer_options[PROGRAM_KEY].with_structure_lock(lock)
        options["transformer_options"] = transformer_options
        return options

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        run = self.run
        if run.x0 is None:
            run.x0 = self.inner_model.process_latent_in(self.source_latent.to(device=x.device, dtype=x.dtype))
        x_s = source_branch_latent(x, run.previous_x0_hat, run.x0)
        sigma = float(timestep.max())
        lock = run.lock is not None and run.lock.active(timestep)
        target_guided, source_guided = _uses_uncond(self.target_cfg, model_options), _uses_uncond(self.source_cfg, model_options)
        negative, slots = self.conds.get("negative"), [None] * 4
        slots[TARGET_COND], slots[SOURCE_COND] = self.conds["positive"], self.conds["source"]
        if target_guided:
            slots[TARGET_UNCOND] = negative
        if source_guided or (lock and target_guided):
            slots[SOURCE_UNCOND] = negative
        options = dict(model_options)
        pure_noise = run.previous_x0_hat is None and self.start == "noise"  # the first step from noise: no image in x_s yet
        options["model_function_wrapper"] = BranchBatch(x, x_s, lock, self.node, model_options.get("model_function_wrapper"), pure_noise)
        out = comfy.samplers.calc_cond_batch(self.inner_model, slots, x, timestep, options)
        zeros = torch.zeros_like(x)
        denoised_t = comfy.samplers.cfg_function(
            self.inner_model, out[TARGET_COND], out[TARGET_UNCOND] if target_guided else zeros, self.target_cfg, x, timestep,
            model_options=model_options, cond=slots[TARGET_COND], uncond=slots[TARGET_UNCOND])
        denoised_s = comfy.samplers.cfg_function(
            self.inner_model, out[SOURCE_COND], out[SOURCE_UNCOND] if source_guided else zeros, self.source_cfg, x_s, timestep,
            model_options=model_options, cond=slots[SOURCE_COND], uncond=slots[SOURCE_UNCOND] if source_guided else None)
        x0_hat = ddcm_target_x0(run.x0, x, x_s, denoised_t, denoised_s, timestep)
        steps = len(run.sigmas) - 1
        run.blended_last_call = self.background is not None and self.background.blends(step_index(run.sigmas, sigma), steps, sigma)
        if run.blended_last_call:
            x0_hat = blend_background(x0_hat, run.x0, self.background.mask.to(x0_hat))
        run.previous_x0_hat = x0_hat
        return x0_hat


def _uses_uncond(cfg: float, model_options: dict) -> bool:
    """ComfyUI's rule: CFG 1 skips the unconditional rows unless disable_cfg1_optimization is set."""
    return not math.isclose(cfg, 1.0) or model_options.get("disable_cfg1_optimization", False)


class BranchBatch:
    """``model_function_wrapper`` for one model call: the source chunks get the source branch's latent,
    and the attention callables get the :class:`BranchLayout` under ``LAYOUT_KEY``."""

    def __init__(self, x_t, x_s, lock: bool, node: str, previous=None, pure_noise: bool = False):
        self.x_t, self.x_s, self.lock, self.node, self.previous = x_t, x_s, lock, node, previous
        self.pure_noise = pure_noise

    def __call__(self, apply_model, args):
        slots = list(args["cond_or_uncond"])
        rows = self.x_t.shape[0]
        if args["input"].shape != (rows * len(slots), *self.x_t.shape[1:]):
            raise NodeInputError(
                f"{self.node}: a conditioning with an area (Conditioning Set Area) reached the dual-branch batch; the "
                "branches must cover the whole latent. Use masks (object_masks, Region-Guided Cross-Attention) instead of areas."
            )
        if self.lock and any(slot in slots and partner not in slots for slot, partner in SOURCE_OF.items()):
            raise NodeInputError(
                f"{self.node}: ComfyUI split the batch into several model calls (not enough free memory), so the target rows "
                "could not take their source rows' queries and keys. Free memory (smaller image or batch, other models "
                "unloaded) or set the lock's schedule to custom 0.0 to sample without the lock."
            )
        chunks = args["input"].chunk(len(slots))
        inputs = torch.cat([self.x_s if slot in SOURCE_SLOTS else chunk for slot, chunk in zip(slots, chunks)])
        c = dict(args["c"])
        c["transformer_options"] = dict(c.get("transformer_options", {}), **{LAYOUT_KEY: branch_layout(slots, rows, device=self.x_t.device, pure_noise=self.pure_noise)})
        args = dict(args, input=inputs, c=c)
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])


def check_sampling_latents(latent_image, source_latent, denoise_mask, node: str) -> None:
    """What a dual-branch guider needs from SamplerCustomAdvanced's latent: the source latent, without a noise mask."""
    if tuple(latent_image.shape) != tuple(source_latent.shape):
        raise NodeInputError(
            f"{node}: the sampler's latent_image is {tuple(latent_image.shape)} but the guider's source latent is "
            f"{tuple(source_latent.shape)}. Connect the same source LATENT to the guider and to SamplerCustomAdvanced."
        )
    if denoise_mask is not None:
        raise NodeInputError(
            f"{node}: the latent given to the sampler has a noise mask. Blend the background with the guider "
            "instead (its object_masks input; it keeps the source branch's latent): connect the "
            "plain VAE Encode latent, not one from Latent Background Blend or Set Latent Noise Mask."
        )


def background_blending(model, masks, per_image: int, latent, feather: int, rule: str, end_percent: float, node: str) -> BackgroundBlending:
    """The guider's background blending from checked object masks ``[I*N, H, W]`` (``per_image`` = N): each image's union,
    feathered, at latent size (``ale``: ALE-Edit's blocky multi-scale resize; ``exact``: bilinear), until ``end_percent``."""
    check_mask_size(masks, latent, node)
    unions = feather_mask(image_unions(masks, per_image), feather)  # one per image of a batch
    if unions.shape[0] not in (1, latent.shape[0]):
        raise NodeInputError(f"{node}: {unions.shape[0]} mask sets for a batch of {latent.shape[0]} images. Give one mask set "
                             "for the whole batch, or one per image (image-major, as the Object Masks nodes make them).")
    resize = multiscale_foreground if rule == "ale" else latent_mask
    return BackgroundBlending(1.0 - resize(unions, *latent.shape[-2:]), rule, percent_to_sigma(model, end_percent))


def check_source(source, node: str) -> None:
    if not source:
        raise NodeInputError(f"{node}: the source conditioning is empty. Connect the 'source' output of Object-Restricted Encode.")
    if any(ORE_KEY in options for _, options in source):
        raise NodeInputError(
            f"{node}: the 'source' input got the target conditioning (it carries the object-restricted embeddings). "
            "Connect Object-Restricted Encode's 'source' output to source and its 'target' output to target."
        )


def check_model_sampling(model, node: str) -> None:
    sampling = model.get_model_object("model_sampling")
    if not isinstance(sampling, comfy.model_sampling.EPS):
        raise NodeInputError(
            f"{node}: this model samples with {type(sampling).__name__}; DDCM's virtual inversion is defined for "
            "diffusion (VP) models with eps or v prediction, such as SD1.5 and SDXL (with or without an LCM LoRA), "
            "not for flow-matching models (SD3, Flux). On Flux use Dual-Branch Edit Guider for Flux (LeakFree) (FlowEdit); "
            "sample other flow models with an ordinary guider."
        )


def source_samples(source_latent, node: str) -> torch.Tensor:
    samples = source_latent.get("samples") if isinstance(source_latent, dict) else None
    if samples is None or samples.ndim != 4:
        raise NodeInputError(f"{node}: source_latent is not an image latent. Connect the LATENT output of VAE Encode of the image you edit.")
    if not torch.count_nonzero(samples):
        raise NodeInputError(f"{node}: source_latent is empty (all zeros). Connect VAE Encode of the image you edit, not Empty Latent Image.")
    return samples
