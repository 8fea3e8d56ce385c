"""Attention Map Recorder and Attention Map Preview: each object's cross-attention, recorded while the sampler runs
(an observer term of the region attention program), drawn over the image with its region's outline and leak."""
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..attention import attention_maps as maps_module
from ..attention.plan import EditPlanError
from ..attention.region_attention import SigmaWindow
from ..attention.tokens import plan_windows
from ..integration.checks import check_schedule, mask_sets, schedule_problem
from ..integration.errors import NodeInputError
from ..integration.patching import install_region_program, percent_to_sigma, program_with_regions
from ..integration.sockets import CATEGORY, AttentionMaps, EditPlan, schedule_inputs
from ..masking.preview import MapRow, attention_panels

RECORDER = "Attention Map Recorder (LeakFree)"
PREVIEW = "Attention Map Preview (LeakFree)"
MODE_HELP = {"model": "the model's own attention over the target prompt, RGB-CAM's bias left out: where the latent puts each "
                      "target (the leakage RGB-CAM holds back)",
             "applied": "the attention the layer really mixes with, RGB-CAM's and rebalancing's biases included"}


@dataclass(frozen=True)
class AttentionRecording:
    recorder: maps_module.TargetMapRecorder
    masks: torch.Tensor  # the program's object masks [I*N, H, W]
    count: int
    source: maps_module.SourceMapRecorder | None = None  # the dual branch's source rows, when a CLIP and edit plan were given
    resize: str = "nearest"  # how the program resizes the masks to each layer's grid: the leak is measured there


class AttentionMapRecorder(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeAttentionMapRecorder",
            display_name=RECORDER,
            category=f"{CATEGORY}/attention",
            description="Records each edited object's cross-attention maps (32x32- and 16x16-class layers) while the sampler runs, "
                        "for Attention Map Preview. No extra sampling pass: it rides in the region attention program.",
            inputs=[
                io.Model.Input("model", tooltip="A model after Region-Guided Cross-Attention (and any other LeakFree attention node)."),
                io.Combo.Input("maps", options=list(maps_module.MODES), default="model",
                               tooltip=" ".join(f"{k}: {v}." for k, v in MODE_HELP.items())),
                *schedule_inputs("recording"),
                io.Clip.Input("clip", optional=True, tooltip="With edit_plan, also record the source objects' tokens in the source branch "
                              "of the Dual-Branch Edit Guider (the CLIP that encoded the prompts)."),
                EditPlan.Input("edit_plan", optional=True, tooltip="With clip: the source objects whose maps the source branch records."),
            ],
            outputs=[
                io.Model.Output(display_name="model", tooltip="The model that records (a patched clone): sample with it."),
                AttentionMaps.Output(display_name="attention_maps", tooltip="The recording: connect it to Attention Map Preview."),
            ],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None, **_):
        return schedule_problem(RECORDER, start_percent, end_percent)

    @classmethod
    def execute(cls, model, maps="model", start_percent=0.0, end_percent=1.0, clip=None, edit_plan=None):
        check_schedule(RECORDER, start_percent, end_percent)
        program_with_regions(model, RECORDER)
        patched = model.clone()
        program = program_with_regions(patched, RECORDER)
        window = SigmaWindow(sigma_start=percent_to_sigma(patched, start_percent), sigma_end=percent_to_sigma(patched, end_percent))
        recorder = maps_module.TargetMapRecorder(program.cross.spans, program.cross.tokens, program.cross.strict, window, maps)
        program, source = program.with_cross_observer(recorder), None
        if clip is not None and edit_plan is not None:
            try:
                windows, spans, _ = plan_windows(clip.tokenize, edit_plan.objects, RECORDER)
            except EditPlanError as error:
                raise NodeInputError(str(error)) from None
            source = maps_module.SourceMapRecorder(spans, len(next(iter(windows.values()))[0]), window)
            program = program.with_call_observer(source)
        install_region_program(patched, program)
        return io.NodeOutput(patched, AttentionRecording(recorder, program.cross.masks, program.cross.count, source, program.cross.resize))


class AttentionMapPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeAttentionMapPreview",
            display_name=PREVIEW,
            category=f"{CATEGORY}/attention",
            description="Draws each object's recorded cross-attention over the image, one panel per object with its region's "
                        "outline, and reports its leak: the share of the object's attention that falls outside its region.",
            inputs=[
                AttentionMaps.Input("attention_maps", tooltip="The attention_maps output of Attention Map Recorder."),
                io.Image.Input("image", tooltip="The picture to draw on: the decoded edit (connecting it also makes this node run after "
                               "the sampler) or the source."),
                io.Mask.Input("object_masks", optional=True, tooltip="The regions to outline and measure against; empty = the masks "
                              "Region-Guided Cross-Attention uses."),
                EditPlan.Input("edit_plan", optional=True, tooltip="Names the panels with the target prompts."),
            ],
            outputs=[
                io.Image.Output(display_name="panels", tooltip="Per image, one panel per object side by side (a second row for the source branch's "
                                "source objects when recorded): heat = attention, white = region outline."),
                io.String.Output(display_name="leaks", tooltip="Per object: the share of its attention outside its region, and what was recorded."),
            ],
        )

    @classmethod
    def execute(cls, attention_maps, image, object_masks=None, edit_plan=None):
        recording = attention_maps
        maps = recording.recorder.averaged()
        if maps is None:
            raise NodeInputError(
                f"{PREVIEW}: nothing was recorded. Sample with the MODEL output of Attention Map Recorder, connect the decoded "
                "image of that sampler to this node's image input (so it runs after sampling), and check the recorder's "
                "start/end percent cover some steps.")
        masks = recording.masks if object_masks is None else object_masks
        named = edit_plan is not None and len(edit_plan) == recording.count
        objects = list(edit_plan.objects) if named else [f"object {i + 1}" for i in range(recording.count)]
        sets = mask_sets(masks, objects, PREVIEW, ", or leave object_masks empty")
        rows = [MapRow("target", maps, list(edit_plan.targets) if named else objects, recording.recorder.leaks(sets, recording.resize))]
        source = recording.source.averaged() if recording.source is not None else None
        if source is not None and source.shape[0] == maps.shape[0]:
            rows.append(MapRow("source", source, [f"source {name}" for name in objects], recording.source.leaks(sets, recording.resize)))
        panels, lines = attention_panels(image, sets, rows)
        grids = ", ".join(f"{h}x{w}" for h, w in sorted(recording.recorder.sums))
        lines.append(f"maps: {recording.recorder.mode}; {len(recording.recorder.sigmas)} step(s); layers {grids}"
                     + ("; source branch recorded" if len(rows) > 1 else ""))
        return io.NodeOutput(panels, "\n".join(lines))
