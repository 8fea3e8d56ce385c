"""FlowEdit's inversion-free edit path for rectified-flow models (Flux), written as the denoised output a guider hands
to an Euler sampler.

FlowEdit (Kulikov et al., ICCV 2025, Alg. 1; official code fallenshock/FlowEdit at 457f402, ``FlowEdit_utils.py``,
``FlowEditFLUX`` lines 231-402, its loop 322-400) on latents ``z_t = (1 - t) x + t n``, over the T steps ``t_0 > ... > t_T = 0`` of the
schedule, skipping the first ``T - n_max``:

    z_fe = x_src                                         (no inversion: the edit path starts at the source)
    each step i with T - i > n_min, for each of n_avg fresh noises n:
        z_src = (1 - t_i) x_src + t_i n
        z_tar = z_fe + z_src - x_src
        z_fe += (t_{i+1} - t_i) mean_n [v(z_tar, c_tar) - v(z_src, c_src)]
    the last n_min steps, with one noise n drawn at the first of them:
        x_tar = z_fe + z_src - x_src, then plain Euler steps x_tar += (t_{i+1} - t_i) v(x_tar, c_tar); the result is x_tar

**As a denoiser.** The sampler's latent is ``z_fe``. With flow model sampling ComfyUI's denoiser is ``D = x - t v`` and
its Euler step ``x' = x + (t' - t)(x - D) / t``, so returning ``D = z_fe - t Δv`` makes each Euler step FlowEdit's
update exactly. The tail fits the same form: for the fixed ``n``, ``x_tar = z_fe + t (n - x_src)``, and
``Δv = v(x_tar, c_tar) - (n - x_src)`` (``n - x_src`` is the velocity of the source's straight path ``z_src(t)``) gives
``z_fe' + t' (n - x_src) = x_tar + (t' - t) v(x_tar, c_tar)``: plain Euler on ``x_tar``, which equals ``z_fe`` at t = 0.

Pure torch; no ComfyUI imports.
"""
from __future__ import annotations

import torch

# FlowEdit's Flux settings (FLUX_exp.yaml and FlowEditFLUX's defaults) besides T = 28, the steps of the scheduler.
FLUX_DEFAULTS = {"n_max": 24, "n_min": 0, "noise_samples": 1, "source_guidance": 1.5, "target_guidance": 5.5}


def skipped_steps(steps: int, n_max: int) -> int:
    """Steps of a T-step schedule FlowEdit skips: those with T - i > n_max (none when n_max >= T)."""
    return max(steps - n_max, 0)


def edits_at(step: int, steps: int, n_min: int) -> bool:
    """Step i of T is an edit step (two branches) while T - i > n_min; after that it is the plain-sampling tail."""
    return steps - step > n_min


def source_path(x_src: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The source on its straight noising path: z_src = (1 - t) x_src + t n."""
    return (1 - t) * x_src + t * noise


def target_latent(z_fe: torch.Tensor, z_src: torch.Tensor, x_src: torch.Tensor) -> torch.Tensor:
    """z_tar = z_fe + z_src - x_src, summed so that z_fe = x_src gives z_src bit for bit."""
    return z_src + (z_fe - x_src)


def velocity(x: torch.Tensor, denoised: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The velocity behind a flow denoiser's output: D = x - t v."""
    return (x - denoised) / t


def edit_denoised(z_fe: torch.Tensor, delta_v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """D = z_fe - t Δv: an Euler step from t to t' with it is z_fe += (t' - t) Δv."""
    return z_fe - t * delta_v
