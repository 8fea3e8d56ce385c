"""Region-Guided Cross-Attention with a ControlNet in the graph (ComfyUI's ControlNet classes at the tiny UNet's shape,
random weights, ControlNetApplyAdvanced): the ControlNet reads the empty prompt on the target's rows, so its residuals
carry no object's text into any region. (IP-Adapter, LoRA and ControlNet on the real server with the real files:
tests/comfy_server/test_peers.py.)"""
import torch

from harness import random_models
from harness.editing import EDITS, encode, object_masks, sample

LATENT = (1, 4, 12, 16)
MOON_CHANGED = "wolf -> brown-colored goat\nmoon -> moon made of green cheese"


def controlled_run(models, controlnet, edits, with_control=True):
    """One step, strict isolation, CFG 3: the ControlNet residuals and the model output of the model call."""
    from nodes import ControlNetApplyAdvanced

    from leakfree_edit.nodes.encode import ObjectRestrictedEncode
    from leakfree_edit.nodes.region_attention import RegionGuidedCrossAttention

    clip = models.clip()
    target, _, _ = ObjectRestrictedEncode.execute(clip, edits, "object")
    positive, negative = target, encode(clip, "blurry")
    if with_control:
        hint = torch.rand(1, 8 * LATENT[2], 8 * LATENT[3], 3, generator=torch.Generator().manual_seed(4))
        positive, negative = ControlNetApplyAdvanced().apply_controlnet(positive, negative, controlnet, hint, 1.0, 0.0, 1.0)
    model, = RegionGuidedCrossAttention.execute(models.unet(), target, object_masks(8 * LATENT[2], 8 * LATENT[3]), "strict")
    calls = []

    def record(apply_model, args):
        control = {name: list(residuals) for name, residuals in (args["c"].get("control") or {}).items()}  # the UNet pops them
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append((list(args["cond_or_uncond"]), control, out))
        return out

    model.set_model_unet_function_wrapper(record)
    sample(model, positive, negative, torch.randn(LATENT, generator=torch.Generator().manual_seed(3)), 3.0, steps=1)
    return calls


def test_a_controlnet_on_the_target_reads_no_objects_text(models):
    controlnet = random_models.controlnet()
    base, changed = controlled_run(models, controlnet, EDITS), controlled_run(models, controlnet, MOON_CHANGED)
    (order, control, out), (_, control_changed, _) = base[0], changed[0]
    assert len(base) == 1 and sorted(order) == [0, 1]  # target and negative still share one model call
    cond = order.index(0)
    residuals = [(a.chunk(2)[cond], b.chunk(2)[cond]) for name in ("middle", "output") for a, b in zip(control[name], control_changed[name])
                 if a is not None]
    assert residuals and all(torch.equal(a, b) for a, b in residuals)  # the prompt change never reaches the ControlNet
    assert any(a.abs().max() > 0 for a, _ in residuals)
    without = controlled_run(models, controlnet, EDITS, with_control=False)
    assert not torch.equal(without[0][2], out)  # the ControlNet acts
