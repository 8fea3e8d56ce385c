"""Test material shared by the tests: the example edit, prompt encoding, object masks, the sampler, a model-call recorder,
and the Leakage Metrics case."""
import numpy as np
import torch
import torch.nn.functional as F

EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"


def encode(clip, text):
    """CLIPTextEncode's output, for negatives and plain prompts."""
    cond, pooled = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True)
    return [[cond, {"pooled_output": pooled}]]


def object_masks(height=96, width=128):
    """Two objects for EDITS: the wolf top-left, the moon bottom-right, background in between."""
    masks = torch.zeros(2, height, width)
    masks[0, : height // 2, : width // 3] = 1
    masks[1, height // 2 :, width // 2 :] = 1
    return masks


def pack_node_classes() -> dict:
    """The pack's node classes by key, as ComfyUI registers them: run its ``__init__`` and its ``comfy_entrypoint``."""
    import asyncio
    import importlib

    pack = importlib.import_module("leakfree_edit")
    pack.__spec__.loader.exec_module(pack)
    extension = asyncio.run(pack.comfy_entrypoint())
    return {node.GET_SCHEMA().node_id: node for node in asyncio.run(extension.get_node_list())}


def record_model_calls(model):
    """Wrap apply_model to keep (cond_or_uncond, output chunks) of every UNet call."""
    calls = []

    def wrapper(apply_model, args):
        out = apply_model(args["input"], args["timestep"], **args["c"])
        calls.append((list(args["cond_or_uncond"]), out.chunk(len(args["cond_or_uncond"]))))
        return out

    model.set_model_unet_function_wrapper(wrapper)
    return calls


def by_row_kind(calls):
    """{0: conditional outputs, 1: unconditional outputs} of the first step, however ComfyUI split the batch."""
    rows = {}
    for order, chunks in calls:
        for kind, chunk in zip(order, chunks):
            rows.setdefault(kind, chunk)
    return rows


def sample(model, positive, negative, latent, cfg, steps=2, noise_mask=None, seed=0):
    import comfy.sample

    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive, negative, latent,
                               denoise=1.0, noise_mask=noise_mask, seed=seed, disable_pbar=True)


LEAKAGE_SIZE = 96
LEAKAGE_EDITS = [("wolf", "brown-colored goat"), ("moon", "moon made of gold"), ("mountain", "crimson-colored mountain")]


def leakage_case():
    """A source, an edited image and three soft, overlapping 8-bit masks (as ALE-Bench's grey PNGs are), for LEAKAGE_EDITS."""
    rng = np.random.default_rng(7)
    source = rng.integers(0, 256, (LEAKAGE_SIZE, LEAKAGE_SIZE, 3), dtype=np.uint8)
    edited = np.clip(source.astype(int) + rng.integers(-60, 60, source.shape), 0, 255).astype(np.uint8)
    masks = [np.zeros((LEAKAGE_SIZE, LEAKAGE_SIZE), np.uint8) for _ in LEAKAGE_EDITS]
    masks[0][10:50, 10:40] = 255
    masks[1][30:70, 30:90] = 128  # soft, and overlapping the first
    masks[2][60:90, 5:60] = 37
    return source, edited, masks


def clip_by_definition(found, image: np.ndarray, text: str) -> float:
    """CLIPScore by its definition, 100 * max(cos(E_image, E_text), 0), straight from the loaded metric models' CLIP
    (``found``: evaluation.models.load_metric_models) and its processor: the reference the metric tests hold the pack to."""
    model, processor = found.clip.model.model, found.clip.processor
    with torch.no_grad():
        pixels = processor(images=[torch.from_numpy(image).permute(2, 0, 1)], return_tensors="pt")["pixel_values"]
        tokens = processor(text=[text], return_tensors="pt", padding=True)
        image_features = model.visual_projection(model.vision_model(pixel_values=pixels).pooler_output)
        text_features = model.text_projection(model.text_model(**tokens).pooler_output)
    cosine = F.cosine_similarity(image_features, text_features).item()
    return max(100 * cosine, 0.0)
