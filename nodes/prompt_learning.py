"""Dynamic Prompt Learning: DPL's learned source-object tokens, optimised before every sampling step."""
from comfy_api.latest import io

from ..attention.prompt_learning import LearningSettings, LossTerm, PromptLearning, SourceAttentionRecorder
from ..integration.checks import check_mask_size, check_masks, check_model, check_range
from ..integration.errors import NodeInputError
from ..integration.patching import install_region_program, region_program
from ..integration.prompt_learning import (
    LearnedSourcePrompt, SharedTargetPrompt, clustered_background_mask, digest, model_identity, progress_bar, word_alignment,
)
from ..integration.sockets import CATEGORY, EditPlan
from ..masking.ops import image_unions

NODE = "Dynamic Prompt Learning (LeakFree)"
GRIDS = {"1/4": 4, "1/2": 2, "1/8": 8}  # the loss layers, as a fraction of the latent's side (DPL: 16x16 at 512 px = 1/4)
MAX_ITERATIONS = 200
DEFAULTS = LearningSettings()
LOSSES = (("attend", DEFAULTS.attend, "Attend-and-Excite term, max_i max(0, 1 - smoothed peak of object i's attention)"),
          ("background", DEFAULTS.background, "background term, mean cosine between each object's map and the background mask"),
          ("disjoint", DEFAULTS.disjoint, "disjointness term, mean cosine between the objects' maps"))


def loss_inputs() -> list:
    """weight, alpha and beta of each loss (DPL's values as defaults)."""
    inputs = []
    for name, term, what in LOSSES:
        inputs += [
            io.Float.Input(f"{name}_weight", default=term.weight, min=0.0, max=10.0, step=0.01,
                           tooltip=f"Weight of the {what} (DPL: {term.weight}). 0 = off."),
            io.Float.Input(f"{name}_alpha", default=term.alpha, min=0.1, max=1000.0, step=0.5,
                           tooltip=f"Early stop: the {name} loss must fall below beta x exp(-step / alpha) (DPL: alpha {term.alpha})."),
            io.Float.Input(f"{name}_beta", default=term.beta, min=0.0, max=10.0, step=0.01,
                           tooltip=f"Early stop: the {name} threshold at the first step (DPL: beta {term.beta})."),
        ]
    return inputs


class DynamicPromptLearning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="LeakFreeDynamicPromptLearning",
            display_name=NODE,
            category=f"{CATEGORY}/attention",
            description="DPL (NeurIPS 2023): before every sampling step, the source objects' token embeddings are optimised so that "
                        "each object's cross-attention lands on its own object (Attend-and-Excite, background and disjointness losses). "
                        "For the Dual-Branch Edit Guider; with Attention Replacement after it the target draws with the learned "
                        "maps (no masks). Costly: many forward/backward passes per step.",
            inputs=[
                io.Model.Input("model", tooltip="The model to sample with: the checkpoint's (mask-free: Attention Replacement after this node) "
                               "or Region-Guided Cross-Attention's MODEL (masked). It is cloned, never changed."),
                io.Clip.Input("clip", tooltip="The CLIP that encoded the edit (Object-Restricted Encode's): its embedding table gives the "
                              "learned rows their start, and it re-encodes the source prompt with them. It is never changed."),
                EditPlan.Input("edit_plan", tooltip="From Object-Restricted Encode: the source objects whose tokens are learned."),
                io.String.Input("nouns", default="", tooltip="The word of each source object whose token is learned, one per line or "
                                "comma, in edit order (e.g. 'dog, cat'). Empty: each object's last word."),
                io.Int.Input("iterations", default=DEFAULTS.iterations, min=0, max=MAX_ITERATIONS,
                             tooltip=f"Most optimisation passes per sampling step, each one text-encoder and UNet forward + backward "
                                     f"(DPL: {DEFAULTS.iterations}); the loop stops early once every loss is below its threshold. 0 = off."),
                io.Float.Input("learning_rate", default=DEFAULTS.learning_rate, min=0.0, max=1.0, step=0.0001, round=0.00001,
                               tooltip="AdamW learning rate on the learned rows (DPL: 0.001); a fresh optimiser every step."),
                io.Float.Input("weight_decay", default=DEFAULTS.weight_decay, min=0.0, max=1.0, step=0.001,
                               tooltip="AdamW weight decay (DPL: 0.01, PyTorch's default)."),
                *loss_inputs(),
                io.Combo.Input("attention_grid", options=list(GRIDS), default="1/4",
                               tooltip="The cross-attention layers the losses read, as a fraction of the latent's side (DPL: 16x16 at "
                                       "512 px, 1/4). The self-attention clustering uses the level above (1/2)."),
                io.Int.Input("clusters", default=5, min=2, max=20,
                             tooltip="Without object_masks: KMeans clusters of the self-attention for the background mask (DPL: 5)."),
                io.Float.Input("cluster_threshold", default=0.2, min=0.0, max=1.0, step=0.01,
                               tooltip="Without object_masks: a cluster is background when no object's normalised attention "
                                       "averages above this in it (DPL: 0.2)."),
                io.Mask.Input("object_masks", optional=True, tooltip="Painted or Grounded-SAM masks (one per edit line): the background "
                              "term uses 1 - their union. Without them the background comes from clustering the self-attention."),
                io.Latent.Input("source_latent", optional=True, tooltip="VAE Encode of the image you edit: needed for the clustered "
                                "background when object_masks is not connected."),
            ],
            outputs=[io.Model.Output(tooltip="The model with prompt learning on the source rows (a patched clone; other model "
                                             "wrappers on it keep running). Connect it to the Dual-Branch Edit Guider.")],
        )

    @classmethod
    def execute(cls, model, clip, edit_plan, nouns="", iterations=DEFAULTS.iterations, learning_rate=DEFAULTS.learning_rate,
                weight_decay=DEFAULTS.weight_decay, attention_grid="1/4", clusters=5, cluster_threshold=0.2,
                object_masks=None, source_latent=None, **losses):
        check_model(model, edit_plan, NODE)
        check_range(NODE, "iterations", iterations, 0, MAX_ITERATIONS)
        terms = {name: LossTerm(*(float(losses.get(f"{name}_{part}", getattr(term, part))) for part in ("weight", "alpha", "beta")))
                 for name, term, _ in LOSSES}
        if attention_grid not in GRIDS:
            raise NodeInputError(f"{NODE}: attention_grid is {attention_grid!r}; choose one of {', '.join(GRIDS)}.")
        settings = LearningSettings(iterations=iterations, learning_rate=learning_rate, weight_decay=weight_decay,
                                    grid_factor=GRIDS[attention_grid], **terms)
        background = learning_background(model, clip, edit_plan, settings, clusters, cluster_threshold, object_masks, source_latent)
        source = LearnedSourcePrompt(clip, edit_plan, nouns, NODE)
        target = SharedTargetPrompt(source, edit_plan, word_alignment(clip, edit_plan, NODE).kept, NODE)
        patched = model.clone()
        program = region_program(patched)
        recorder = SourceAttentionRecorder(settings.grid_factor)
        install_region_program(patched, program.with_call_observer(recorder))
        key = (model_identity(model), digest(source.reference, *source.initial), source.tokens, settings, digest(background),
               repr(program.self_biases))
        previous = patched.model_options.get("model_function_wrapper")
        wrapper = PromptLearning(source.source_prompt(), settings, recorder, background, source.lend, progress_bar, NodeInputError,
                                 key, NODE, previous, target.target_prompt() if target.shares else None)
        patched.set_model_unet_function_wrapper(wrapper)
        return io.NodeOutput(patched)


def learning_background(model, clip, plan, settings, clusters, threshold, object_masks, source_latent):
    """1 - the union of the object masks, DPL's clustered self-attention background, or None when the term is off."""
    if not settings.background.weight:
        return None
    samples = source_latent.get("samples") if isinstance(source_latent, dict) else None
    if object_masks is not None:
        masks = check_masks(object_masks, plan, NODE)
        if samples is not None:
            check_mask_size(masks, samples, NODE)
        return 1.0 - image_unions(masks, len(plan))
    if samples is None or samples.ndim != 4:
        raise NodeInputError(
            f"{NODE}: the background term needs a background mask. Connect object_masks (painted or Grounded-SAM masks), or "
            "source_latent (VAE Encode of the image you edit) for DPL's self-attention clustering, or set background_weight to 0.")
    return clustered_background_mask(model, clip, plan, samples, settings.grid_factor, clusters, threshold, NODE)
