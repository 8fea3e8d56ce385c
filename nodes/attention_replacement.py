"""Attention Replacement: Prompt-to-Prompt's cross- and self-attention replacement in the dual branch, as DPL edits."""
from comfy_api.latest import io

from ..attention.replacement import MapReplacement
from ..integration.checks import check_model, check_range
from ..integration.errors import NodeInputError
from ..integration.patching import install_region_program, region_program
from ..integration.prompt_learning import word_alignment
from ..integration.sockets import CATEGORY, EditPlan

NODE = "Attention Replacement (LeakFree)"
CROSS, SELF = 0.8, 0.4  # DPL's _4_image_edit.py: cross_replace_steps 40, self_replace_steps 20 of its 50 DDIM steps


class AttentionReplacement(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeAttentionReplacement",
            display_name=NODE,
            category=f"{CATEGORY}/attention",
            description="Prompt-to-Prompt's attention replacement, as DPL edits with it: in the first steps the target's "
                        "cross-attention maps for the source's words are the source branch's maps (after Dynamic Prompt Learning: "
                        "the learned ones), word-aligned across the two prompts, and its coarse self-attention is the source's. "
                        "Edits without masks. For the Dual-Branch Edit Guider.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch, e.g. Dynamic Prompt Learning's MODEL (it is cloned, never changed). "
                               "Not after Region-Guided Cross-Attention: the masks and the replaced maps would both decide the "
                               "target's attention."),
                io.Clip.Input("clip", tooltip="The CLIP that encoded the edit: its tokenizer aligns the source's and the target's words."),
                EditPlan.Input("edit_plan", tooltip="From Object-Restricted Encode: each line's source and target words are aligned."),
                io.Float.Input("cross_replace", default=CROSS, min=0.0, max=1.0, step=0.05,
                               tooltip="Share of the first steps whose target cross-attention maps are the source's "
                                       f"(DPL: 40 of 50 steps, {CROSS}). 0 = off."),
                io.Float.Input("self_replace", default=SELF, min=0.0, max=1.0, step=0.05,
                               tooltip="Share of the first steps whose target self-attention (at the layers 4x below the latent and "
                                       f"coarser, 16x16 at 512 px) is the source's (DPL: 20 of 50 steps, {SELF}). 0 = off."),
            ],
            outputs=[io.Model.Output(tooltip="The model with attention replacement (a patched clone). Connect it to the Dual-Branch "
                                             "Edit Guider.")],
        )

    @classmethod
    def execute(cls, model, clip, edit_plan, cross_replace=CROSS, self_replace=SELF):
        check_model(model, edit_plan, NODE)
        check_range(NODE, "cross_replace", cross_replace, 0.0, 1.0)
        check_range(NODE, "self_replace", self_replace, 0.0, 1.0)
        patched = model.clone()
        program = region_program(patched)
        if program.cross is not None:
            raise NodeInputError(
                f"{NODE}: this model has Region-Guided Cross-Attention, which decides the target's attention by the object masks; "
                "replacement decides it by the source's maps. Use one: connect the model before Region-Guided Cross-Attention "
                "(the mask-free edit), or leave this node out (the masked edit).")
        term = MapReplacement(alignment=word_alignment(clip, edit_plan, NODE), cross=float(cross_replace),
                                    self_fraction=float(self_replace), error=NodeInputError, node=NODE)
        install_region_program(patched, program.with_replacement(term), self_attention=self_replace > 0)
        return io.NodeOutput(patched)
