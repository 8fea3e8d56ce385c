"""The dual-branch edit: InfEdit's DDCM virtual inversion as ALE-Edit runs it, its structure-lock
schedule and the batch layout of the one UNet call that serves both branches.

Equations (InfEdit, Xu et al. CVPR 2024, Sec. 3 "Denoising Diffusion Consistent Models";
ALE-Edit, ICCV 2025, Sec. 4.4), with alpha = alphas_cumprod at the step and VP latents:

    x0_hat_t = x0 + [(x_t - x_s) - sqrt(1 - alpha) (eps_t - eps_s)] / sqrt(alpha)
    x_t'     = sqrt(alpha') x0_hat_t + sqrt(1 - alpha') z
    x_s'     = sqrt(alpha') x0       + sqrt(1 - alpha') z      (the SAME z; eta = 1)

ComfyUI samples eps/v-prediction VP models on scaled latents x = x_vp / sqrt(alpha) with
sigma^2 = (1 - alpha) / alpha, i.e. alpha = 1 / (1 + sigma^2), and its denoiser returns
D = x - sigma eps. On those latents the re-noising reads x' = x0_hat + sigma' z, which is
exactly what ComfyUI's LCM sampler does with the denoised output it is given.

Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .self_attention import BranchLayout, StructureLock

# ALE-Edit's self-attention injection fraction per edit type (official code defaults).
SELF_ATTENTION_SCHEDULES = {"color": 1.0, "object": 0.5, "material": 0.6, "color+object": 0.5, "object+material": 0.5}
CUSTOM_SCHEDULE = "custom"  # the preset that takes the fraction from its own input


def lock_fraction(preset: str, custom: float) -> float:
    """The structure lock's fraction of the steps: an edit type's preset, or ``custom`` for the preset ``custom``."""
    return custom if preset == CUSTOM_SCHEDULE else SELF_ATTENTION_SCHEDULES[preset]

# The four condition slots of the batched UNet call, in the order handed to ComfyUI. Each target
# slot sits next to the source slot of its CFG half, so when ComfyUI splits the batch for lack of
# memory, the halves it cuts keep every target chunk with its source chunk.
TARGET_COND, SOURCE_COND, TARGET_UNCOND, SOURCE_UNCOND = range(4)
SOURCE_SLOTS = (SOURCE_COND, SOURCE_UNCOND)
SOURCE_OF = {TARGET_COND: SOURCE_COND, TARGET_UNCOND: SOURCE_UNCOND}


def alpha_from_sigma(sigma: torch.Tensor) -> torch.Tensor:
    """alphas_cumprod of a VP model at ComfyUI's sigma: sigma^2 = (1 - alpha) / alpha (VP column of Karras et al. 2022, Table 1)."""
    return 1.0 / (1.0 + sigma**2)


def virtual_inversion_x0(x0, x_t, x_s, eps_t, eps_s, alpha) -> torch.Tensor:
    """InfEdit's DDCM estimate of the target's clean latent (VP latents):
    x0_hat_t = x0 + [(x_t - x_s) - sqrt(1 - alpha)(eps_t - eps_s)] / sqrt(alpha)."""
    return x0 + ((x_t - x_s) - (1 - alpha).sqrt() * (eps_t - eps_s)) / alpha.sqrt()


def ddcm_target_x0(x0, x_t, x_s, denoised_t, denoised_s, sigma: torch.Tensor) -> torch.Tensor:
    """:func:`virtual_inversion_x0` on ComfyUI's scaled latents, from the two branches' denoised outputs.

    x_vp = sqrt(alpha) x and eps = (x - D) / sigma (the eps implied by ComfyUI's denoiser, so
    v-prediction and LCM model sampling work unchanged); the result is a clean latent, the same
    in both spaces.
    """
    sigma = sigma.reshape(-1, *([1] * (x_t.ndim - 1))).to(x_t.dtype)
    alpha = alpha_from_sigma(sigma)
    eps_t, eps_s = (x_t - denoised_t) / sigma, (x_s - denoised_s) / sigma
    return virtual_inversion_x0(x0, alpha.sqrt() * x_t, alpha.sqrt() * x_s, eps_t, eps_s, alpha)


def source_branch_latent(x_t: torch.Tensor, previous_x0_hat: torch.Tensor | None, x0: torch.Tensor) -> torch.Tensor:
    """The source branch's latent, given the target's: x_s = x_t - (x0_hat_prev - x0).

    DDCM re-noises both branches with the same noise n: x_t = x0_hat_prev + sigma n and
    x_s = x0 + sigma n on scaled latents, whatever n the sampler drew. Both branches start
    from the same latent, so before the first step x_s = x_t.
    """
    if previous_x0_hat is None:
        return x_t
    return x_t - (previous_x0_hat - x0)


def blend_background(x0_hat: torch.Tensor, x0: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """ALE-Edit's Background Blending on the clean estimate: m_bg x0 + (1 - m_bg) x0_hat.

    Both branches are re-noised with the same noise, so this is z_T <- m_bg z_S + (1 - m_bg) z_T
    (ALE-Edit Eq. 7) at the next noise level, and the exact source where m_bg = 1.
    """
    return background * x0 + (1 - background) * x0_hat


STARTS = ("noise", "img2img")
BLEND_RULES = ("ale", "exact")


@dataclass(frozen=True)
class BackgroundBlending:
    """Where and when the guider keeps the source's background: ``mask`` ``[I, 1, h, w]`` (1 = keep the source; one per
    image of the batch, or one for all), applied to x0_hat while the step's sigma > ``sigma_end``, following ``rule``.

    ``ale``: ALE-Edit's code (``pipeline_ead.py``, ``attention_control.py``) blends x_t after every step but the first
    (``i > 0``) and decodes the last step's pred_x0 unblended, i.e. it blends x0_hat of the steps 1 .. steps - 2.
    ``exact``: every step, the last included, so the background of the result is the source latent exactly.
    """

    mask: torch.Tensor
    rule: str = "ale"
    sigma_end: float = 0.0

    def __post_init__(self):
        if self.rule not in BLEND_RULES:
            raise ValueError(f"background blend rule must be one of {BLEND_RULES}, got {self.rule!r}")

    def blends(self, step: int, steps: int, sigma: float) -> bool:
        if sigma <= self.sigma_end:
            return False
        return self.rule == "exact" or 0 < step < steps - 1


def step_index(sigmas: torch.Tensor, sigma: float) -> int:
    """The index of the step whose sigma is ``sigma`` in a run's ``sigmas`` (the nearest one)."""
    return int((sigmas[:-1] - sigma).abs().argmin())


def lock_active(step: int, steps: int, schedule: float) -> bool:
    """ALE-Edit's self-attention injection: on while (step + 1) / steps < schedule."""
    return (step + 1) / steps < schedule


def structure_lock(sigmas: torch.Tensor, schedule: float) -> StructureLock | None:
    """The lock over a run's ``sigmas`` as a sigma window: from the first step to the last step ALE-Edit locks.

    The locked steps are the first k, so the window ends at the k-th step's sigma; none is locked: no term.
    """
    steps = len(sigmas) - 1
    locked = sum(lock_active(step, steps, schedule) for step in range(steps))
    return StructureLock(sigma_end=float(sigmas[locked - 1])) if locked else None


def branch_layout(slots: list[int], rows: int, device=None, pure_noise: bool = False) -> BranchLayout:
    """Batch rows of each target chunk and of its CFG half's source chunk, for one UNet call.

    ``slots`` is the condition slot of each chunk in batch order (ComfyUI's ``cond_or_uncond``),
    each chunk ``rows`` rows long. Target chunks whose source chunk is not in the call are left
    out of the lock's pairs (but not of ``branch``). ``pure_noise``: the source chunks hold pure noise (the first step
    of a run started from noise).
    """
    position = {slot: index for index, slot in enumerate(slots)}
    chunk = lambda slot: list(range(position[slot] * rows, (position[slot] + 1) * rows)) if slot in position else []
    target, source = [], []
    for target_slot, source_slot in SOURCE_OF.items():
        if target_slot in position and source_slot in position:
            target += chunk(target_slot)
            source += chunk(source_slot)
    as_rows = lambda r: torch.tensor(r, dtype=torch.long, device=device)
    return BranchLayout(target=as_rows(target), source=as_rows(source), branch=as_rows(chunk(TARGET_COND) + chunk(TARGET_UNCOND)),
                        conditional=as_rows(chunk(TARGET_COND)), pure_noise=pure_noise)
