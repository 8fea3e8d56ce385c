"""Dual-Branch Edit Guider: the DDCM math, its schedules and the row layout on tensors (ComfyUI's sampler in tests/comfy_nodes/)."""
import torch

import leakfree_edit.attention.self_attention as self_attention
from leakfree_edit.attention.dual_branch import (
    SOURCE_COND,
    SOURCE_UNCOND,
    TARGET_COND,
    TARGET_UNCOND,
    alpha_from_sigma,
    blend_background,
    branch_layout,
    ddcm_target_x0,
    lock_active,
    source_branch_latent,
    virtual_inversion_x0,
)

# --- the equations on tensors -------------------------------------------------------------

def test_lcm_step_on_scaled_latents_is_infedits_ddcm_update():
    """ComfyUI's LCM step x' = D + sigma' z, with x_s from source_branch_latent, is InfEdit's eta = 1 update."""
    g = torch.Generator().manual_seed(0)
    x0, x_t, x_s, eps_t, eps_s, z = (torch.randn(2, 4, 3, 5, generator=g) for _ in range(6))
    sigma, sigma_next = torch.tensor([7.0, 7.0]), torch.tensor(2.5)
    alpha, alpha_next = alpha_from_sigma(sigma).view(-1, 1, 1, 1), alpha_from_sigma(sigma_next)
    vp = lambda x, a: a.sqrt() * x  # scaled latent -> VP latent
    expected_x0 = virtual_inversion_x0(x0, vp(x_t, alpha), vp(x_s, alpha), eps_t, eps_s, alpha)
    s = sigma.view(-1, 1, 1, 1)
    x0_hat = ddcm_target_x0(x0, x_t, x_s, x_t - s * eps_t, x_s - s * eps_s, sigma)  # from ComfyUI's denoised outputs
    torch.testing.assert_close(x0_hat, expected_x0)
    next_target = x0_hat + sigma_next * z  # what sample_lcm does with the returned x0_hat
    next_source = source_branch_latent(next_target, x0_hat, x0)
    torch.testing.assert_close(vp(next_target, alpha_next), alpha_next.sqrt() * expected_x0 + (1 - alpha_next).sqrt() * z)
    torch.testing.assert_close(vp(next_source, alpha_next), alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * z)


def test_schedule_layout_and_blend_rules():
    assert [lock_active(step, 15, 0.5) for step in range(15)] == [True] * 7 + [False] * 8
    assert [lock_active(step, 4, 1.0) for step in range(4)] == [True, True, True, False]
    assert not any(lock_active(step, 4, 0.0) for step in range(4))
    layout = branch_layout([SOURCE_UNCOND, TARGET_UNCOND, SOURCE_COND, TARGET_COND], rows=2)
    assert layout.target.tolist() == [6, 7, 2, 3] and layout.source.tolist() == [4, 5, 0, 1]
    assert branch_layout([TARGET_UNCOND, SOURCE_COND, TARGET_COND], rows=1).target.tolist() == [2]
    x0, x0_hat, background = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 2, 2), torch.tensor([[[[1.0, 0.0], [0.5, 1.0]]]])
    blended = blend_background(x0_hat, x0, background)
    assert torch.equal(blended[..., 0, 0], x0[..., 0, 0]) and torch.equal(blended[..., 0, 1], x0_hat[..., 0, 1])


# --- through ComfyUI's sampler ------------------------------------------------------------


def test_region_terms_act_on_the_targets_conditional_rows_only():
    """One rule for the rows self-attention binding acts on: the target's conditional chunk, locked step or not."""
    from leakfree_edit.attention.rebalance import biased_rows

    for slots in ([SOURCE_UNCOND, TARGET_UNCOND, SOURCE_COND, TARGET_COND], [TARGET_UNCOND, SOURCE_COND, TARGET_COND]):
        layout = branch_layout(slots, rows=2)
        rows, images = biased_rows({self_attention.LAYOUT_KEY: layout}, 2 * len(slots), "cpu")
        target = 2 * slots.index(TARGET_COND)
        assert rows.tolist() == [target, target + 1] and images.tolist() == [0, 1]
        assert sorted(layout.branch.tolist()) == sorted(sum(([2 * slots.index(s), 2 * slots.index(s) + 1] for s in (TARGET_COND, TARGET_UNCOND)), []))
