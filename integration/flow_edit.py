"""The dual branch on Flux as a ComfyUI guider: FlowEdit's inversion-free edit path (attention/flow_edit.py), the
target and source branches in one batched model call per step, the structure lock and background blending."""
from __future__ import annotations

from dataclasses import dataclass

import torch

import comfy.k_diffusion.sampling
import comfy.samplers

from ..attention.dual_branch import SOURCE_COND, TARGET_COND, BackgroundBlending, blend_background, step_index, structure_lock
from ..attention.flow_edit import edit_denoised, edits_at, skipped_steps, source_path, target_latent, velocity
from ..attention.joint_attention import STRUCTURE_LOCK_KEY
from ..attention.self_attention import StructureLock
from .checks import JOINT_KEY, ORE_KEY, check_masks
from .errors import NodeInputError
from .guider import BranchBatch, check_sampling_latents


@dataclass(frozen=True)
class FlowEditSettings:
    """FlowEdit's parameters besides T (the steps of the sigmas the sampler gets) and the guidance (on the conds)."""

    n_max: int = 24
    n_min: int = 0
    noise_samples: int = 1
    lock_schedule: float = 0.5  # the structure lock's fraction of the steps run: locked while (step + 1) / steps < this


@dataclass
class _Run:
    """What one sampling run of the guider tracks between model calls."""

    sigmas: torch.Tensor  # the steps run (the schedule from step T - n_max on), on the CPU
    skipped: int  # T - n_max: the schedule's index of sigmas[0]
    steps: int  # T
    generator: torch.Generator  # FlowEdit's fresh noises, seeded by the sampler's seed
    lock: StructureLock | None
    x_src: torch.Tensor | None = None  # the source latent in the model's latent space, on the device
    tail_noise: torch.Tensor | None = None  # the noise of the plain-sampling tail (the last n_min steps)
    blended_last_call: bool = False


class FlowEditGuider(comfy.samplers.CFGGuider):
    """FlowEdit on ComfyUI's Euler sampler: the sampler's latent is the edit path z_fe, and every model call returns
    ``D = z_fe - t Δv`` (attention/flow_edit.py), so that Euler's step is FlowEdit's update.

    Conds: ``positive`` the target (read by the region-routed model), ``source`` the source prompt, each with its own
    distilled guidance. Both go to ComfyUI's ``calc_cond_batch`` as two slots of one call (target, then source: the
    slot order of the SD guider's conditional half); a ``model_function_wrapper`` (:class:`BranchBatch`) puts z_src into
    the source chunk and the branch layout into ``transformer_options``, where the joint-attention override applies
    the structure lock. The tail (last n_min steps) needs the target alone: one row.
    """

    def __init__(self, model_patcher, source_latent: torch.Tensor, settings: FlowEditSettings, node: str,
                 background: BackgroundBlending | None = None):
        super().__init__(model_patcher)
        self.source_latent, self.settings, self.node, self.background = source_latent, settings, node, background
        self.run: _Run | None = None

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False, seed=None):
        check_sampling_latents(latent_image, self.source_latent, denoise_mask, self.node)
        check_euler(sampler, self.node)
        steps = len(sigmas) - 1
        skipped = skipped_steps(steps, self.settings.n_max)
        run_sigmas = sigmas[skipped:]
        cpu_sigmas = run_sigmas.detach().float().cpu()
        self.run = _Run(sigmas=cpu_sigmas, skipped=skipped, steps=steps, generator=torch.Generator().manual_seed(seed or 0),
                        lock=structure_lock(cpu_sigmas, self.settings.lock_schedule))
        kept = self.model_options
        self.model_options = {**kept, "transformer_options": {**kept.get("transformer_options", {}), STRUCTURE_LOCK_KEY: self.run.lock}}
        # The path starts at the source: ComfyUI's flow noise scaling t n + (1 - t) x with n = x gives x (to rounding).
        start = self.model_patcher.model.process_latent_in(latent_image)
        try:
            samples = super().sample(start, latent_image, sampler, run_sigmas, None, callback, disable_pbar, seed)
            if self.run.blended_last_call:
                # the last step kept the source exactly; undo the latent-format round trip's rounding
                samples = blend_background(samples, self.source_latent.to(samples), self.background.mask.to(samples))
        finally:
            self.model_options, self.run = kept, None
        return samples

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        run = self.run
        if run.x_src is None:
            run.x_src = self.inner_model.process_latent_in(self.source_latent.to(device=x.device, dtype=x.dtype))
        x_src, t = run.x_src, timestep.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)
        step = step_index(run.sigmas, float(timestep.max()))
        if edits_at(run.skipped + step, run.steps, self.settings.n_min):
            lock = run.lock is not None and run.lock.active(timestep)
            delta = torch.zeros_like(x)
            for _ in range(self.settings.noise_samples):
                z_src = source_path(x_src, self._noise(x), t)
                z_tar = target_latent(x, z_src, x_src)
                d_tar, d_src = self._branches(z_tar, z_src, timestep, model_options, lock)
                delta += velocity(z_tar, d_tar, t) - velocity(z_src, d_src, t)
            delta /= self.settings.noise_samples
        else:
            if run.tail_noise is None:
                run.tail_noise = self._noise(x)
            z_tar = target_latent(x, source_path(x_src, run.tail_noise, t), x_src)
            delta = velocity(z_tar, self._target_branch(z_tar, timestep, model_options), t) - (run.tail_noise - x_src)
        denoised = edit_denoised(x, delta, t)
        run.blended_last_call = self.background is not None and self.background.blends(step, len(run.sigmas) - 1, float(timestep.max()))
        if run.blended_last_call:
            denoised = blend_background(denoised, x_src, self.background.mask.to(denoised))
        return denoised

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        """A fresh N(0, I) draw of the latent's shape from the run's generator (drawn on the CPU: the same on any device)."""
        return torch.randn(x.shape, generator=self.run.generator, dtype=torch.float32).to(x)

    def _branches(self, z_tar, z_src, timestep, model_options, lock: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The target's and the source's denoised outputs, from one batched model call."""
        slots = [None, None]
        slots[TARGET_COND], slots[SOURCE_COND] = self.conds["positive"], self.conds["source"]
        options = dict(model_options)
        options["model_function_wrapper"] = BranchBatch(z_tar, z_src, lock, self.node, model_options.get("model_function_wrapper"))
        out = comfy.samplers.calc_cond_batch(self.inner_model, slots, z_tar, timestep, options)
        return (self._post_cfg(out[TARGET_COND], z_tar, timestep, model_options, slots[TARGET_COND]),
                self._post_cfg(out[SOURCE_COND], z_src, timestep, model_options, slots[SOURCE_COND]))

    def _target_branch(self, z_tar, timestep, model_options) -> torch.Tensor:
        cond = self.conds["positive"]
        out, = comfy.samplers.calc_cond_batch(self.inner_model, [cond], z_tar, timestep, model_options)
        return self._post_cfg(out, z_tar, timestep, model_options, cond)

    def _post_cfg(self, denoised, x, timestep, model_options, cond) -> torch.Tensor:
        """ComfyUI's CFG step at scale 1 (FlowEdit runs Flux without CFG), so post-CFG patches act on each branch."""
        return comfy.samplers.cfg_function(self.inner_model, denoised, torch.zeros_like(x), 1.0, x, timestep,
                                           model_options=model_options, cond=cond, uncond=None)


def check_euler(sampler, node: str) -> None:
    """FlowEdit's update is an Euler step of its edit path: other samplers would integrate something else."""
    euler = getattr(sampler, "sampler_function", None) is comfy.k_diffusion.sampling.sample_euler
    if not euler or getattr(sampler, "extra_options", {}).get("s_churn", 0):
        raise NodeInputError(
            f"{node}: FlowEdit's update z_fe += (t' - t)(v_tar - v_src) is an Euler step, so this guider needs the euler "
            "sampler. Connect KSamplerSelect with sampler_name euler to SamplerCustomAdvanced's sampler."
        )


def check_flux_branches(source, target, object_masks, locked: bool, node: str) -> tuple[torch.Tensor | None, int]:
    """Check the branches' conditionings (``locked``: the structure lock will need both in one model call); return the
    object masks checked against the target's edit plan (when it has one: Object-Restricted Encode for Flux's) and the
    masks per image."""
    if not source:
        raise NodeInputError(f"{node}: the source conditioning is empty. Connect the 'source' output of Object-Restricted Encode for Flux.")
    payload = None
    for _, options in target or ():
        if options.get(ORE_KEY) is not None:
            raise NodeInputError(f"{node}: the target was encoded for SD1.5/SDXL by Object-Restricted Encode. On Flux encode the edits "
                                 "with Object-Restricted Encode for Flux (LeakFree); on SD1.5/SDXL use Dual-Branch Edit Guider (LeakFree).")
        payload = payload or options.get(JOINT_KEY)
    if not target:
        raise NodeInputError(f"{node}: the target conditioning is empty. Connect the 'target' output of Object-Restricted Encode for Flux.")
    if payload is None and any(JOINT_KEY in options for _, options in source):
        raise NodeInputError(f"{node}: the 'source' input got the target conditioning (it carries the per-object encodings). Connect "
                             "Object-Restricted Encode for Flux's 'source' output to source and its 'target' output to target.")
    lengths = {tensor.shape[1] for tensor, _ in (*source, *target)}
    if locked and len(lengths) > 1:
        raise NodeInputError(f"{node}: the source and target prompts are {' and '.join(map(str, sorted(lengths)))} T5 tokens long; the "
                             "structure lock needs both branches in one model call, which needs one length. Keep both prompts within "
                             "T5's 256-token window, or set the lock to custom 0.0.")
    if object_masks is None:
        return None, 0
    if payload is not None:
        return check_masks(object_masks, payload.plan, node), len(payload.plan)
    if object_masks.ndim != 3 or not object_masks.shape[0]:
        raise NodeInputError(f"{node}: object_masks must be a MASK batch from an Object Masks node (one mask per object).")
    return object_masks, object_masks.shape[0]


def with_guidance(conditioning, guidance: float) -> list:
    """The conditioning with Flux's distilled guidance set, as FluxGuidance sets it."""
    return [[tensor, {**options, "guidance": guidance}] for tensor, options in conditioning]
