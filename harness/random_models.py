"""Random-weight models built with ComfyUI's own classes: for the tests, the benchmark and the
headless runner when no checkpoint is named. Nothing is downloaded; the CLIP vocabulary is the
one that ships inside the ComfyUI package.
"""
from __future__ import annotations

import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.sdxl_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.taesd.taesd
import comfy.text_encoders.flux
import torch

SD15_FULL = dict(  # the real SD1.5 UNet shape
    model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2, 2, 2, 2],
    transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    transformer_depth_middle=1, num_heads=8,
)
SD15_TINY = dict(
    model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[1, 1],
    transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1, num_heads=2,
)
SD15_TINY_3_LEVELS = dict(  # cross-attention at 1, 1/2 and 1/4 of the latent, as SD1.5's (whose 1/8 level has none)
    model_channels=32, channel_mult=[1, 2, 2], num_res_blocks=[1, 1, 1], transformer_depth=[1, 1, 1],
    transformer_depth_output=[1, 1, 1, 1, 1, 1], transformer_depth_middle=1, num_heads=2,
)
SDXL_TINY = dict(  # SDXL's layout (linear transformers, depth 2 blocks, adm, 2048-d context), small widths
    model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1], transformer_depth=[0, 2],
    transformer_depth_output=[0, 0, 2, 2], transformer_depth_middle=1, num_head_channels=16,
)
SDXL_FULL = dict(
    model_channels=320, channel_mult=[1, 2, 4], num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10],
    transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10, num_head_channels=64,
)

FLUX = dict(image_model="flux", in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, mlp_ratio=4.0, theta=10000, qkv_bias=True)
FLUX_SHAPES = {
    "tiny": dict(hidden_size=64, num_heads=2, axes_dim=[8, 12, 12], depth=2, depth_single_blocks=2, context_in_dim=64),
    # the released width and text width, as ComfyUI's model detection fixes them; 1 + 1 of the 19 + 38 blocks
    "reduced": dict(hidden_size=3072, num_heads=24, axes_dim=[16, 56, 56], depth=1, depth_single_blocks=1, context_in_dim=4096),
}

TINY_TEXT = dict(hidden_act="quick_gelu", intermediate_size=64, num_attention_heads=2, num_hidden_layers=3,
                 max_position_embeddings=77, vocab_size=49408, layer_norm_eps=1e-5, bos_token_id=0, eos_token_id=2,
                 pad_token_id=1, model_type="clip_text_model", architectures=["CLIPTextModel"])


def randomize_(module: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Fill every parameter: ComfyUI builds layers without initialising them."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif "norm" in name and parameter.ndim == 1:
                parameter.fill_(1.0)
            else:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)
    return module


def unet(kind: str = "sd15", size: str = "tiny", seed: int = 0, dtype=torch.float32, compute_dtype=None) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around a random-weight UNet of ComfyUI's own classes.

    ``dtype``: the weights' dtype (what ``--fp16-unet``, ``--bf16-unet`` or UNETLoader's ``weight_dtype`` choose);
    ``compute_dtype``: when set, ComfyUI casts the weights to it per layer (``comfy.ops.manual_cast``), as it runs fp8
    weights, or fp16 weights on a device without fp16 arithmetic."""
    return _patcher(unet_config(kind, size), seed, dtype, compute_dtype)


def unet_config(kind: str = "sd15", size: str = "tiny"):
    """ComfyUI's model config of an SD1.5 or SDXL UNet of that shape."""
    shapes = {("sd15", "tiny"): SD15_TINY, ("sd15", "tiny 3 levels"): SD15_TINY_3_LEVELS, ("sd15", "full"): SD15_FULL, ("sdxl", "tiny"): SDXL_TINY, ("sdxl", "full"): SDXL_FULL}
    base = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, use_spatial_transformer=True,
                legacy=False, use_temporal_attention=False, use_temporal_resblock=False, dtype=torch.float32)
    if kind == "sd15":
        config = dict(base, adm_in_channels=None, context_dim=768, use_linear_in_transformer=False, **shapes[(kind, size)])
        return comfy.supported_models.SD15(config)
    config = dict(base, adm_in_channels=2816, num_classes="sequential", context_dim=2048, use_linear_in_transformer=True, **shapes[(kind, size)])
    return comfy.supported_models.SDXL(config)


def unet_model(kind: str = "sd15", size: str = "tiny"):
    """ComfyUI's SD1.5 or SDXL model (``comfy.model_base``) of that shape, its weights not initialised (ComfyUI's ops
    leave them as allocated; under ``torch.device("meta")`` they take no memory)."""
    return unet_config(kind, size).get_model({})


def controlnet_model(kind: str = "sd15", size: str = "tiny", seed: int = 0) -> torch.nn.Module:
    """ComfyUI's ControlNet (comfy/cldm/cldm.py) for the UNet of that shape, as its loader builds it (the UNet's config
    without ``out_channels``, an RGB hint), with random weights."""
    import comfy.cldm.cldm
    import comfy.ops

    config = {k: v for k, v in unet_config(kind, size).unet_config.items() if k != "out_channels"}
    return randomize_(comfy.cldm.cldm.ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **config), seed)


def controlnet(kind: str = "sd15", seed: int = 0):
    """A random-weight SD ControlNet of the tiny UNet's shape behind ComfyUI's ``ControlNet`` object."""
    import comfy.controlnet

    return comfy.controlnet.ControlNet(controlnet_model(kind, "tiny", seed), load_device=torch.device("cpu"))


def _patcher(model_config, seed: int, dtype, compute_dtype) -> comfy.model_patcher.ModelPatcher:
    """The model of ``model_config`` as ComfyUI's loaders build it for ``dtype`` weights, random, in a ModelPatcher."""
    model_config.set_inference_dtype(dtype, compute_dtype)
    model = model_config.get_model({})
    randomize_(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def flux(size: str = "tiny", seed: int = 0, guidance: bool = True, dtype=torch.float32, compute_dtype=None) -> comfy.model_patcher.ModelPatcher:
    """A ModelPatcher around a random-weight Flux (dev with ``guidance``, else schnell) of ComfyUI's own classes.

    ``reduced``: the released width with 1 double and 1 single block, as ComfyUI detects it from a file. ``dtype``,
    ``compute_dtype``: as for :func:`unet`.
    """
    config = dict(FLUX, guidance_embed=guidance, **FLUX_SHAPES[size])
    model_config = (comfy.supported_models.Flux if guidance else comfy.supported_models.FluxSchnell)(config)
    return _patcher(model_config, seed, dtype, compute_dtype)


def flux_controlnet(size: str = "tiny", seed: int = 0):
    """An XLabs-form Flux ControlNet (image hint, ComfyUI's ControlNetFlux: the Flux blocks of that shape and a linear
    output per block) with random weights, behind ComfyUI's ``ControlNet`` object as its loader builds it."""
    import comfy.controlnet
    import comfy.ldm.flux.controlnet
    import comfy.ops

    params = {k: v for k, v in dict(FLUX, guidance_embed=True, **FLUX_SHAPES[size]).items() if k != "image_model"}
    control = comfy.ldm.flux.controlnet.ControlNetFlux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **params)
    randomize_(control, seed)
    return comfy.controlnet.ControlNet(control, load_device=torch.device("cpu"), extra_conds=["y", "guidance"])


def redux(width: int, seed: int = 0, vision_width: int = 16):
    """ComfyUI's Redux style model (ReduxImageEncoder, SigLIP features to ``width``-d text tokens) with random weights."""
    import comfy.ldm.flux.redux

    return comfy.sd.StyleModel(randomize_(comfy.ldm.flux.redux.ReduxImageEncoder(vision_width, width), seed))


def flux_text_options(size: str = "tiny") -> dict:
    """ComfyUI's per-encoder config overrides: a thin T5 (2 layers, the real vocabulary) as wide as that Flux shape's
    text (t5_config_xxl.json: 24 layers of width 4096); for ``tiny`` a thin CLIP-L too (``reduced``: the real CLIP-L)."""
    options = {"t5xxl_model_config": dict(d_model=FLUX_SHAPES[size]["context_in_dim"], d_ff=64, d_kv=32, num_heads=2, num_layers=2)}
    if size == "tiny":
        options["clip_l_model_config"] = dict(TINY_TEXT, hidden_size=768, projection_dim=768)
    return options


def flux_clip(size: str = "tiny", seed: int = 0) -> comfy.sd.CLIP:
    """Flux's CLIP object (FluxTokenizer + FluxClipModel: CLIP-L and T5-XXL classes, the vocabularies that ship in
    ComfyUI) with random weights, thin through ComfyUI's per-encoder config override."""
    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.flux.FluxTokenizer, comfy.text_encoders.flux.flux_clip())
    result = comfy.sd.CLIP(target, model_options=flux_text_options(size))
    randomize_(result.cond_stage_model, seed, std=0.05)
    return result


def clip(kind: str = "sd15", seed: int = 0) -> comfy.sd.CLIP:
    """A comfy.sd.CLIP with random weights, the real tokenizers and the real encode path.

    The text models get tiny widths through ComfyUI's own per-encoder config override
    (``model_options["clip_l_model_config"]``, ``["clip_g_model_config"]``).
    """
    if kind == "sd15":
        target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
        options = {"clip_l_model_config": dict(TINY_TEXT, hidden_size=768, projection_dim=768)}
    else:
        target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, comfy.sdxl_clip.SDXLClipModel)
        options = {"clip_l_model_config": dict(TINY_TEXT, hidden_size=768, projection_dim=768),
                   "clip_g_model_config": dict(TINY_TEXT, hidden_size=1280, projection_dim=1280)}
    result = comfy.sd.CLIP(target, model_options=options)
    randomize_(result.cond_stage_model, seed, std=0.05)
    return result


def vae(seed: int = 0) -> comfy.sd.VAE:
    """A random-weight TAESD-format VAE (8x down/up-sampling, 4 latent channels)."""
    state = randomize_(comfy.taesd.taesd.TAESD(), seed, std=0.05).state_dict()
    return comfy.sd.VAE(sd=state)


class RandomModels:
    """Each random-weight model built once and handed out (UNets and Flux as fresh clones): ``models.unet("sd15")``,
    ``models.clip("sdxl")``, ``models.flux()``, ``models.flux_clip()``. The tests' ``models`` fixture is one."""

    def __init__(self):
        self._built = {}

    def _once(self, key, build):
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def unet(self, kind: str = "sd15", dtype=torch.float32, compute_dtype=None) -> comfy.model_patcher.ModelPatcher:
        return self._once(("unet", kind, dtype, compute_dtype), lambda: unet(kind, dtype=dtype, compute_dtype=compute_dtype)).clone()

    def clip(self, kind: str = "sd15") -> comfy.sd.CLIP:
        return self._once(("clip", kind), lambda: clip(kind))

    def flux(self, size: str = "tiny", dtype=torch.float32, compute_dtype=None) -> comfy.model_patcher.ModelPatcher:
        return self._once(("flux", size, dtype, compute_dtype), lambda: flux(size, dtype=dtype, compute_dtype=compute_dtype)).clone()

    def flux_clip(self) -> comfy.sd.CLIP:
        return self._once(("flux clip",), flux_clip)
