"""Object Masks from Grounded-SAM: one mask per edit-plan object, found by Grounding-DINO and cut by SAM."""
from comfy_api.latest import io

from ..integration.object_masks import dilation_pixels, show_warnings
from ..integration.detection import grounded_sam_masks
from ..integration.sockets import CATEGORY, EditPlan, GroundingDino, Sam, object_mask_outputs, overlap_input
from ..masking.grounded_sam import INSTANCES, ON_MISSING
from ..masking.ops import OVERLAP_RULES

NODE = "Object Masks from Grounded-SAM (LeakFree)"


class ObjectMasksGroundedSAM(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeObjectMasksGroundedSAM",
            display_name=NODE,
            category=f"{CATEGORY}/masks",
            description="Finds each source object of the edit plan with Grounding-DINO and cuts it out with SAM (its image encoder "
                        "once per image): one dilated mask per object in edit order, the background mask and a labelled preview.",
            inputs=[
                io.Image.Input("image", tooltip="The photo to edit (a batch gives masks per image)."),
                EditPlan.Input("edit_plan", tooltip="From Object-Restricted Encode: its source objects are what is looked for."),
                GroundingDino.Input("detector", tooltip="From Grounding-DINO Loader (LeakFree)."),
                Sam.Input("segmenter", tooltip="From SAM Loader (LeakFree)."),
                io.Float.Input("box_threshold", default=0.45, min=0.0, max=1.0, step=0.01,
                               tooltip="A box counts when its best caption token scores above this (ALE-Edit: 0.45)."),
                io.Float.Input("text_threshold", default=0.4, min=0.0, max=1.0, step=0.01,
                               tooltip="A box belongs to the object whose words score highest, if above this (ALE-Edit: 0.4)."),
                io.Float.Input("dilation_percent", default=4.0, min=0.0, max=25.0, step=0.5,
                               tooltip="Grow each mask by a disk of this percent of the image's short side (ALE-Edit: 4)."),
                io.Combo.Input("on_missing", options=list(ON_MISSING), default="error",
                               tooltip="An object with no box: stop with an error naming it, or edit it unmasked, as ALE-Edit does on "
                                       "PIE-Bench (its mask: everywhere the found objects are not), with a warning in the log."),
                io.Combo.Input("instances", options=list(INSTANCES), default="all",
                               tooltip="all: every box of an object joins its mask. best: only its highest-scoring box. A name on "
                                       "several lines (car -> red car, car -> blue car) gets one instance per line, left to right."),
                overlap_input(),
            ],
            outputs=object_mask_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, image, edit_plan, detector, segmenter, box_threshold, text_threshold, dilation_percent, on_missing, instances,
                overlap=OVERLAP_RULES[0]):
        options = dict(box_threshold=box_threshold, text_threshold=text_threshold, instances=instances, on_missing=on_missing)
        radius = dilation_pixels(image.shape[1], image.shape[2], dilation_percent)
        *outputs, warnings = grounded_sam_masks(image, edit_plan, detector, segmenter, options, radius, overlap, NODE)
        return io.NodeOutput(*outputs, ui=show_warnings(NODE, warnings, getattr(cls.hidden, "unique_id", None)))
