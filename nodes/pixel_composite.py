"""Pixel Background Composite: the source image's own pixels outside the objects, after VAE Decode."""
from comfy_api.latest import io

from ..integration.checks import mask_sets, objects_of
from ..integration.errors import NodeInputError
from ..integration.sockets import CATEGORY, EditPlan
from ..masking.composite import pixel_composite
from ..masking.quality import aspect_mismatch

NODE = "Pixel Background Composite (LeakFree)"
MAX_FEATHER = 256


class PixelBackgroundComposite(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreePixelBackgroundComposite",
            display_name=NODE,
            category=f"{CATEGORY}/blend",
            description="After VAE Decode, puts the source image's own pixels back outside the objects (feathered edge), so the "
                        "background is the photo bit for bit, not its VAE round trip.",
            inputs=[
                io.Image.Input("edited", tooltip="The decoded edit (VAE Decode). Another size than the source is resized to it."),
                io.Image.Input("source", tooltip="The image you edited, as loaded (one, or one per edited image)."),
                io.Mask.Input("object_masks", tooltip="One mask per object from an Object Masks node (any size: resized to the image); "
                              "inside their union the edit is kept."),
                io.Int.Input("feather", default=8, min=0, max=MAX_FEATHER,
                             tooltip="Width in pixels of the soft edge outside the objects; beyond it the source is exact. 0 = hard edge."),
                EditPlan.Input("edit_plan", optional=True, tooltip="Needed only for an image batch with one mask set per image: tells how "
                               "many masks make one image's set."),
            ],
            outputs=[
                io.Image.Output(display_name="image", tooltip="The edit inside the objects, the source outside, at the source's size."),
                io.Mask.Output(display_name="edit_weight", tooltip="Where the edit was kept: 1 in the objects, the feathered edge, 0 elsewhere."),
            ],
        )

    @classmethod
    def execute(cls, edited, source, object_masks, feather=8, edit_plan=None):
        union = mask_sets(object_masks, objects_of(edit_plan, object_masks), NODE).amax(dim=1)
        for what, size in (("the edited image is", edited.shape[1:3]), ("the object masks are", union.shape[-2:])):
            if aspect_mismatch(tuple(size), tuple(source.shape[1:3])):
                raise NodeInputError(
                    f"{NODE}: {what} {size[1]}x{size[0]} px but the source is {source.shape[2]}x{source.shape[1]} px (another "
                    "shape): it would be stretched over the source. Connect the image you edited as source, and masks made from it."
                )
        try:
            image, weight = pixel_composite(edited, source, union, feather)
        except ValueError as error:
            raise NodeInputError(f"{NODE}: {error}. Connect the source image you edited, and masks from the same Object Masks node.") from None
        return io.NodeOutput(image, weight)
