"""Dynamic Prompt Learning on tensors: DPL's losses, its thresholds, the clustered background (the inner loop through
ComfyUI's sampler in tests/comfy_nodes/)."""

import pytest
import torch

from leakfree_edit.attention.clustering import background_from_clusters, kmeans_labels
from leakfree_edit.attention.prompt_learning import (
    LearningSettings,
    LossTerm,
    attend_loss,
    background_loss,
    disjoint_loss,
    smoothing_kernel,
    token_attention,
)

# --- the losses on tensors ----------------------------------------------------------------

def test_losses_are_dpls_on_planted_maps():
    """Two objects on token 2 and 4 of 6; L_dis is their maps' cosine, L_bg each map's cosine with the background."""
    attention = torch.full((4, 4, 6), 0.01)
    attention[:2, :2, 2] = 1.0  # object 1 top-left
    attention[2:, 2:, 4] = 1.0  # object 2 bottom-right: disjoint maps
    tokens = ((2,), (4,))
    maps = token_attention(attention, tokens)
    assert float(disjoint_loss(maps)) < 0.05
    # Attend-and-Excite: softmax(100 A) over tokens 1..T-2, smoothed peak; a token that owns its pixels outright is not penalised
    assert float(attend_loss(attention, tokens)) < 0.05
    leaking = attention.clone()
    leaking[2:, 2:, 2] = 1.0  # object 1 leaks onto object 2
    assert float(disjoint_loss(token_attention(leaking, tokens))) > 0.5
    background = torch.ones(4, 4)
    background[:2, :2] = background[2:, 2:] = 0
    assert float(background_loss(maps, background)) < 0.05  # the maps lie on their objects
    assert float(background_loss(maps, 1 - background)) > 0.6
    assert float(disjoint_loss(maps[:1])) == 0.0  # one object: no pairs
    flat = torch.full((4, 4, 6), 0.5)
    assert float(attend_loss(flat, tokens)) == pytest.approx(1 - 1 / 4, abs=1e-5)  # four text tokens share every pixel
    kernel = smoothing_kernel()
    assert kernel.shape == (3, 3) and float(kernel.sum()) == pytest.approx(1.0) and kernel[1, 1] == kernel.max()


def test_thresholds_decay_as_dpl_and_defaults_are_its_script():
    settings = LearningSettings()
    assert settings.iterations == 21 and settings.learning_rate == 1e-3 and settings.weight_decay == 0.01
    assert [(t.weight, t.alpha, t.beta) for t in settings.terms()] == [(1.0, 25.0, 0.3), (0.05, 50.0, 0.7), (0.05, 25.0, 0.9)]
    assert LossTerm(1.0, 25.0, 0.3).threshold(25) == pytest.approx(0.3 / 2.718281828, rel=1e-6)


def test_clustered_background_is_the_unclaimed_clusters():
    """KMeans (scikit-learn, as DPL) on self-attention rows that form three blocks; the block an object's attention
    covers is claimed, the others are background."""
    rows = torch.zeros(8, 8, 3)
    rows[:, :3, 0] = rows[:, 3:6, 1] = rows[:, 6:, 2] = 1.0
    labels = kmeans_labels(rows.view(64, 3) + 0.01 * torch.randn(64, 3, generator=torch.Generator().manual_seed(0)), 3).view(8, 8)
    assert len(labels.unique()) == 3
    noun = torch.zeros(1, 4, 4)
    noun[0, :, 2:3] = 1.0  # covers columns 4..5 of the 8 x 8 grid once upsampled
    background = background_from_clusters(labels, noun, threshold=0.2)
    expected = torch.ones(8, 8)
    expected[:, 3:6] = 0
    assert torch.equal(background, expected)
