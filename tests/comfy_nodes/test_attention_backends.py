"""Isolation whatever attention backend the user starts ComfyUI with: the rows the pack routes go through its own fused
SDPA call, every other row through the user's backend (harness/attention_backends.py: stand-ins for
``--use-sage-attention``, whose kernel drops attention masks, and for a backend that refuses them, installed the way
ComfyUI's flags install them). Random-weight SD1.5 and Flux of ComfyUI's own classes, through its real samplers."""
import pytest
import torch

from harness.attention_backends import BACKENDS, attention_backend
from harness.editing import EDITS, encode, encode_flux, object_masks, sample

SD_LATENT = (1, 4, 12, 16)
FLUX_LATENT = (1, 16, 15, 17)
MOON_CHANGED = "wolf -> brown-colored goat\nmoon -> moon made of green cheese"


def sd_region_model(models, target, isolation="ale"):
    from leakfree_edit.nodes.rebalance import SourceDominanceRebalance
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    model, = RegionGuidedCrossAttention.execute(models.unet(), target, object_masks(8 * SD_LATENT[2], 8 * SD_LATENT[3]), isolation)
    return SourceDominanceRebalance.execute(model, boost=2.0, binding=2.0, surroundings=0.5)[0]  # cross- and self-attention terms


def run_sd(models, isolation):
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip()
    target, _, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    latent = torch.randn(SD_LATENT, generator=torch.Generator().manual_seed(3))
    return sample(sd_region_model(models, target, isolation), target, encode(clip, "blurry"), latent, 3.0)


def run_sd_dual_branch(models):
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch import DualBranchGuider
    from leakfree_edit.nodes.encode import ObjectRestrictedEncode

    clip = models.clip()
    target, source, _ = ObjectRestrictedEncode.execute(clip, EDITS, "object")
    latent = torch.randn(SD_LATENT, generator=torch.Generator().manual_seed(3))
    guider, = DualBranchGuider.execute(sd_region_model(models, target), source, target, encode(clip, ""), {"samples": latent},
                                       source_cfg=1.0, target_cfg=2.0, self_attention_schedule="color")  # locked throughout
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "sgm_uniform", 2)
    torch.manual_seed(0)
    return guider.sample(torch.randn(SD_LATENT, generator=torch.Generator().manual_seed(0)), latent, comfy.samplers.ksampler("lcm"),
                         sigmas, disable_pbar=True, seed=0)


def flux_masks():
    return object_masks(8 * FLUX_LATENT[2], 8 * FLUX_LATENT[3])


def run_flux(models, edits=EDITS):
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, _, _ = encode_flux(models, edits)
    model, = RegionGuidedJointAttention.execute(models.flux(), target, flux_masks())
    return sample(model, target, target, torch.randn(FLUX_LATENT, generator=torch.Generator().manual_seed(3)), 1.0)


def run_flux_dual_branch(models):
    import comfy.samplers

    from leakfree_edit.nodes.dual_branch_flux import DualBranchGuiderFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    target, source, _ = encode_flux(models)
    model, = RegionGuidedJointAttention.execute(models.flux(), target, flux_masks())
    latent = torch.randn(FLUX_LATENT, generator=torch.Generator().manual_seed(5))
    guider, = DualBranchGuiderFlux.execute(model, source, target, {"samples": latent}, lock_schedule="color", object_masks=flux_masks())
    sigmas = comfy.samplers.calculate_sigmas(guider.model_patcher.get_model_object("model_sampling"), "simple", 2)
    return guider.sample(torch.randn(FLUX_LATENT, generator=torch.Generator().manual_seed(0)), latent, comfy.samplers.ksampler("euler"),
                         sigmas, disable_pbar=True, seed=0)


GRAPHS = {
    "sd-rgbcam-rebalance": lambda models: run_sd(models, "ale"),
    "sd-strict": lambda models: run_sd(models, "strict"),
    "sd-dual-branch-locked": run_sd_dual_branch,
    "flux-routing": run_flux,
    "flux-dual-branch-locked": run_flux_dual_branch,
}


@pytest.fixture(scope="module")
def reference(models):
    """Each graph's result under ComfyUI's pytorch attention (the backend the other tests prove isolation on)."""
    return {name: run(models) for name, run in GRAPHS.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("graph", GRAPHS)
def test_every_path_gives_the_same_bits_on_a_mask_dropping_or_mask_refusing_backend(models, reference, graph, backend):
    """Both stand-ins compute unmasked attention as pytorch does: equal bits mean every mask the pack needs (routing
    bias, RGB-CAM's token bias, the self-attention region columns) reached a call of its own, never the backend."""
    with attention_backend(backend):
        out = GRAPHS[graph](models)
    assert torch.equal(out, reference[graph])


def test_flux_region_stays_isolated_under_sage(models):
    """The failure the stand-in reproduces: with the routing bias handed to sage, every region read every object's slot."""
    from leakfree_edit.masking.token_grid import token_regions

    with attention_backend("sage"):
        base, changed = run_flux(models), run_flux(models, MOON_CHANGED)
    grid = token_regions(flux_masks(), 2, *FLUX_LATENT[-2:], 2)[0].view(8, 9)
    pixels = grid.repeat_interleave(2, 0).repeat_interleave(2, 1)[: FLUX_LATENT[2], : FLUX_LATENT[3]]
    for region in (0, 1):  # the background and the wolf
        assert torch.equal(base[..., pixels == region], changed[..., pixels == region])
    assert not torch.equal(base[..., pixels == 2], changed[..., pixels == 2])


class OwnKernel:
    """Another pack's ``optimized_attention_override`` that runs a kernel of its own choice (sage) instead of the
    function it is handed, as per-model attention patch nodes do."""

    def __deepcopy__(self, memo):
        return self

    def __call__(self, func, q, k, v, heads, mask=None, **kwargs):
        import comfy.ldm.modules.attention as attention

        return attention.attention_sage(q, k, v, heads, mask=mask, **kwargs)


def test_an_override_that_bypasses_the_routed_call_is_refused_naming_the_flag(models, monkeypatch):
    from comfy.cli_args import args

    from leakfree_edit.integration.errors import NodeInputError
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    monkeypatch.setattr(args, "use_sage_attention", True)
    monkeypatch.setattr(args, "use_pytorch_cross_attention", False)
    target, _, _ = encode_flux(models)
    model = models.flux()
    model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = OwnKernel()
    routed, = RegionGuidedJointAttention.execute(model, target, flux_masks())
    with attention_backend("sage"), pytest.raises(NodeInputError, match=r"^Region-Guided Joint Attention \(LeakFree\): .*OwnKernel.*--use-sage-attention"):
        sample(routed, target, target, torch.randn(FLUX_LATENT), 1.0, steps=1)
