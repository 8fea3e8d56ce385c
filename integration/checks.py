"""Input checks the nodes share, each failing with a message that names the node and the fix, and the ORE payload
that travels from Object-Restricted Encode to the attention nodes inside the target CONDITIONING."""
from __future__ import annotations

from dataclasses import dataclass

import comfy.ldm.flux.model as comfy_flux
import torch

from ..attention.ore import OreEmbeddings
from ..attention.plan import EditPlan
from ..masking.quality import aspect_mismatch
from .errors import NodeInputError

ORE_KEY = "leakfree_ore"  # where the payload rides in the target conditioning's options
JOINT_KEY = "leakfree_joint"  # where Object-Restricted Encode for Flux puts its payload (integration/flux.py)
FLUX_ROUTE = ("On a Flux model use Object-Restricted Encode for Flux (LeakFree) with Region-Guided Joint Attention (LeakFree); "
              "on SD1.5/SDXL, Object-Restricted Encode (LeakFree) with Region-Guided Cross-Attention (LeakFree).")


@dataclass(frozen=True)
class OrePayload:
    """What the attention nodes need from the encoder, carried by the target CONDITIONING."""

    plan: EditPlan
    embeddings: OreEmbeddings
    eos_mode: str


def ore_payload(conditioning, node: str) -> OrePayload:
    """The ORE payload of a target CONDITIONING, or an error that says where it must come from."""
    for _, options in conditioning or ():
        payload = options.get(ORE_KEY)
        if payload is not None:
            return payload
        if options.get(JOINT_KEY) is not None:
            raise NodeInputError(f"{node}: this conditioning was encoded for Flux by Object-Restricted Encode for Flux. {FLUX_ROUTE}")
    raise NodeInputError(
        f"{node}: this conditioning did not come from Object-Restricted Encode. Connect the 'target' output of "
        "Object-Restricted Encode (LeakFree) (a plain CLIPTextEncode has no object-restricted embeddings)."
    )


def check_range(node: str, name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise NodeInputError(f"{node}: {name} is {value}; it must be between {low} and {high}.")


def schedule_problem(node: str, start_percent: float | None, end_percent: float | None) -> bool | str:
    """``validate_inputs`` answer for a start/end pair: True, or what is wrong (shown before the run)."""
    if start_percent is not None and end_percent is not None and start_percent > end_percent:
        return f"{node}: start_percent ({start_percent}) is after end_percent ({end_percent}); swap them."
    return True


def check_schedule(node: str, start_percent: float, end_percent: float) -> None:
    check_range(node, "start_percent", start_percent, 0.0, 1.0)
    check_range(node, "end_percent", end_percent, 0.0, 1.0)
    problem = schedule_problem(node, start_percent, end_percent)
    if problem is not True:
        raise NodeInputError(problem)


def mask_sets(masks, objects: list[str], node: str, hint: str = "") -> torch.Tensor:
    """``masks`` ``[I * N, H, W]`` as ``[I, N, H, W]``: one mask per object, or one such set per image of a batch
    (image-major, as the mask nodes give them); an error naming the node and the objects otherwise."""
    if masks is None or masks.ndim != 3 or masks.shape[0] == 0 or masks.shape[0] % len(objects):
        count = 0 if masks is None else (masks.shape[0] if masks.ndim == 3 else 1)
        raise NodeInputError(
            f"{node}: got {count} object masks for {len(objects)} objects ({', '.join(objects)}). "
            "Connect the 'object_masks' output of a LeakFree Object Masks node built from the same edit plan "
            f"(one mask per object, or one set per image of a batch){hint}."
        )
    return masks.unflatten(0, (-1, len(objects)))


def objects_of(plan: EditPlan | None, masks: torch.Tensor) -> list[str]:
    """The plan's objects; without a plan, every mask is an object of one set."""
    return list(plan.objects) if plan is not None else [f"object {i + 1}" for i in range(masks.shape[0] if masks.ndim == 3 else 1)]


def check_masks(masks, plan: EditPlan, node: str) -> torch.Tensor:
    """The masks as given (``[I * N, H, W]``), once :func:`mask_sets` accepts them for ``plan``."""
    mask_sets(masks, plan.objects, node)
    return masks


def context_dim(model) -> int | None:
    return model.model.model_config.unet_config.get("context_dim")


def is_flux_model(model) -> bool:
    """A Flux (MMDiT) diffusion model: dev, schnell, Kontext, fine-tunes (ComfyUI's comfy.ldm.flux.model.Flux)."""
    return isinstance(model.model.diffusion_model, comfy_flux.Flux)


def check_model(model, plan: EditPlan, node: str) -> None:
    if is_flux_model(model):
        raise NodeInputError(f"{node}: this is a Flux model (joint attention, no cross-attention layers). {FLUX_ROUTE}")
    expected = context_dim(model)
    if expected is not None and expected != plan.context_dim:
        raise NodeInputError(
            f"{node}: the prompts were encoded for a {plan.family} model ({plan.context_dim}-d text features) "
            f"but this model takes {expected}-d text features. Encode with the CLIP of the checkpoint you sample with."
        )


def check_mask_size(masks: torch.Tensor, latent: torch.Tensor, node: str, latent_name: str = "the source latent",
                    fix: str = "the same image you VAE-encoded") -> None:
    """Masks drawn on a picture of another shape than the latent's would be stretched off the objects: refused."""
    (height, width), (rows, columns) = masks.shape[-2:], tuple(latent.shape[-2:])
    if aspect_mismatch((height, width), (rows, columns)):
        raise NodeInputError(
            f"{node}: the object masks are {width}x{height} px but {latent_name} is for a {8 * columns}x{8 * rows} px "
            f"image (another shape). Make the masks from {fix} (resize or crop both alike)."
        )
