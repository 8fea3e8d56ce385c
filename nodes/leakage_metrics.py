"""Leakage Metrics: ALE-Bench's metrics of an edit (TELS, TILS, edit CLIPScores, background PSNR/SSIM/LPIPS/MSE,
structure distance), computed as ALE-Edit's evaluation code does, from models in models/leakage_metrics."""
import torch
from comfy_api.latest import io

from ..evaluation.ale_metrics import ALL_METRICS, METRICS, score_images
from ..evaluation.card import scores_table
from ..integration.checks import mask_sets
from ..integration.errors import NodeInputError
from ..integration.metrics import ale_metrics, as_uint8, folder_state
from ..integration.sockets import CATEGORY, EditPlan

NODE = "Leakage Metrics (LeakFree)"
METRIC_SETS = {"ale_default": METRICS, "all": ALL_METRICS}


class LeakageMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeLeakageMetrics",
            display_name=NODE,
            category=f"{CATEGORY}/evaluate",
            description="Measures attribute leakage as ALE-Bench does: TELS and TILS (CLIP on masked regions), each object's edit "
                        "CLIPScore, PSNR/SSIM/LPIPS/MSE on the unedited part and DINO structure distance, as a table and a card.",
            inputs=[
                io.Image.Input("source", tooltip="The image you edited (one, or one per edited image)."),
                io.Image.Input("edited", tooltip="The edited image(s); another size is resized to the source (bicubic, as ALE)."),
                io.Mask.Input("object_masks", tooltip="One mask per edit line (any size: resized to the source). ALE scores with the "
                              "benchmark's hand-made masks: use undilated ones (dilation 0) to compare with its figures."),
                EditPlan.Input("edit_plan", tooltip="The edit plan of Object-Restricted Encode: the target prompts CLIP scores against."),
                io.Combo.Input("metrics", options=list(METRIC_SETS), default="ale_default", optional=True,
                               tooltip="ale_default: the eight columns of ALE's Table 1. all: also ALE's other metrics, under its column "
                                       "names: psnr, lpips, mse, ssim (whole image), *_edit_part (inside the objects), "
                                       "structure_distance_unedit_part, clip_similarity_source_image."),
            ],
            outputs=[
                io.String.Output(display_name="table", tooltip="The metrics as a markdown table (one row per image, their mean), and "
                                 "what was switched off for a missing model."),
                io.Image.Output(display_name="card", tooltip="The same table as a picture, for a Preview Image node."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, **_):
        return folder_state()  # a model added to (or removed from) the folder runs the node again

    @classmethod
    def execute(cls, source, edited, object_masks, edit_plan, metrics="ale_default"):
        sets = mask_sets(object_masks, edit_plan.objects, NODE)
        if source.shape[0] not in (1, edited.shape[0]) or sets.shape[0] not in (1, edited.shape[0]):
            raise NodeInputError(f"{NODE}: {edited.shape[0]} edited images, {source.shape[0]} source images and {sets.shape[0]} mask "
                                 "sets: give one source (and mask set), or one per edited image.")
        models, calculator = ale_metrics(NODE)
        edits = [(edit.source, edit.target) for edit in edit_plan.edits]
        names = METRIC_SETS[metrics]
        scores = score_images(calculator, [as_uint8(s) for s in source], [as_uint8(e) for e in edited],
                              [[as_uint8(m) for m in masks] for masks in sets], edits, names)
        text, card = scores_table(scores, [target for _, target in edits], list(models.missing.values()), names)
        return io.NodeOutput(text, torch.from_numpy(card).unsqueeze(0))
