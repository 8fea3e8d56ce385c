"""Object Masks (Grounded-SAM): one mask per edit-plan object, found by Grounding-DINO and cut by SAM."""
from __future__ import annotations

import logging
from contextlib import contextmanager

import comfy.model_management as model_management
import comfy.utils
import torch

from ..masking import grounded_sam
from ..masking.ops import background_mask
from ..masking.preview import labelled_preview
from .comfy_compat import NodeInputError
from .loaders import DETECTOR_TYPE, SEGMENTER_TYPE
from .painted_masks import ObjectMaskNode, dilation_pixels

log = logging.getLogger("LeakFreeEdit")


@contextmanager
def models_on_device(*wrappers):
    """Run the wrapped models on ComfyUI's device, then move them back to the offload device."""
    for wrapper in wrappers:
        wrapper.model.to(model_management.get_torch_device())
    try:
        yield
    finally:
        for wrapper in wrappers:
            wrapper.model.to(model_management.unet_offload_device())
        model_management.soft_empty_cache()


class ObjectMasksGroundedSAM(ObjectMaskNode):
    NODE = "Object Masks (Grounded-SAM)"
    DESCRIPTION = (
        "Finds each source object of the edit plan with Grounding-DINO (one caption per image holding every "
        "object, boxes matched to objects by their token scores) and cuts it out with SAM (the image encoder "
        "runs once per image; all boxes are decoded together). Gives one dilated mask per object in edit order "
        "(several boxes of one object OR-ed, or only the best one), the background mask and a labelled preview. "
        "An image batch gives masks image by image: object masks [images x objects], background [images]."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo to edit (a batch gives masks per image)."}),
                "edit_plan": ("EDIT_PLAN", {"tooltip": "From Object-Restricted Encode: its source objects are what is looked for."}),
                "detector": (DETECTOR_TYPE, {"tooltip": "From Grounding-DINO Loader (LeakFree)."}),
                "segmenter": (SEGMENTER_TYPE, {"tooltip": "From SAM Loader (LeakFree)."}),
                "box_threshold": ("FLOAT", {"default": 0.45, "min": 0.0, "max": 1.0, "step": 0.01,
                                            "tooltip": "A box counts when its best caption token scores above this (ALE-Edit: 0.45)."}),
                "text_threshold": ("FLOAT", {"default": 0.4, "min": 0.0, "max": 1.0, "step": 0.01,
                                             "tooltip": "A box belongs to the object whose words score highest, if above this (ALE-Edit: 0.4)."}),
                "dilation_percent": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 25.0, "step": 0.5,
                                               "tooltip": "Grow each mask by this percent of the image's short side (ALE-Edit: 4)."}),
                "on_missing": (list(grounded_sam.ON_MISSING), {"default": "error",
                               "tooltip": "An object with no box: stop with an error naming it, or edit it unmasked, as ALE-Edit does "
                                          "on PIE-Bench (its mask: everywhere the found objects are not), with a warning in the log."}),
                "instances": (list(grounded_sam.INSTANCES), {"default": "all",
                              "tooltip": "all: every box of an object joins its mask. best: only its highest-scoring box."}),
            }
        }

    def make_masks(self, image, edit_plan, detector, segmenter, box_threshold, text_threshold, dilation_percent,
                   on_missing, instances):
        objects = edit_plan.objects
        radius = dilation_pixels(image.shape[1], image.shape[2], dilation_percent)
        progress = comfy.utils.ProgressBar(image.shape[0])
        masks, backgrounds, previews = [], [], []
        with models_on_device(detector, segmenter):
            for number, picture in enumerate(image):
                try:
                    found, _, missing = grounded_sam.object_masks(
                        picture, objects, detector, segmenter, box_threshold, text_threshold, instances, on_missing, radius)
                except grounded_sam.ObjectPhraseError as error:
                    where = f" in image {number + 1} of {image.shape[0]}" if image.shape[0] > 1 else ""
                    raise NodeInputError(f"{self.NODE}: {error}{where}.") from None
                if missing:
                    log.warning("%s: %s not found; edited without a region mask (everywhere the other objects are not).",
                                self.NODE, ", ".join(missing))
                labels = [f"{o} (unmasked)" if o in missing else o for o in objects]
                masks.append(found)
                backgrounds.append(background_mask(found))
                previews.append(labelled_preview(picture, found, labels))
                progress.update_absolute(number + 1)
        return torch.cat(masks), torch.cat(backgrounds), torch.stack(previews)


NODE_CLASS_MAPPINGS = {"LeakFreeObjectMasksGroundedSAM": ObjectMasksGroundedSAM}
NODE_DISPLAY_NAME_MAPPINGS = {"LeakFreeObjectMasksGroundedSAM": ObjectMasksGroundedSAM.NODE}
