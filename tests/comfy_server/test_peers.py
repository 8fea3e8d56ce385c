"""The pack beside the packs users run with it, on the real server: ComfyUI_IPAdapter_plus (from ../shared/peers,
linked into custom_nodes as the pack is), core LoRA and ControlNet, in one SD1.5 graph with the region nodes, every
model file a random-weight one in its release format (harness/model_files.py). 128 px, one step.

Isolation is read where it is defined on SD1.5 (DESIGN.md: the cross-attention layer; convolutions and self-attention
spread every change over the image within a step): the Isolation Probe (harness/custom_nodes/) records the first
cross-attention layer's output on the target rows, after IP-Adapter's patch and the LoRA, and the ControlNet's
residuals. With isolation ``strict``, changing the moon's prompt must leave the wolf's region of that layer and every
ControlNet residual bit-identical, while removing IP-Adapter, the LoRA or the ControlNet must change them: each one acts.
"""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from harness import model_files, runner
from harness.peers import IPADAPTER_PLUS, peer_packs, required
from harness.server import execution_error
from leakfree_edit.masking.ops import binarize, dilate, dilation_radius, region_weights, resize_masks
from pipelines.comfyui import ROOT

SIZE = 128
EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"
MOON_CHANGED = "wolf -> brown-colored goat\nmoon -> moon made of green cheese"
CHECKPOINT, LORA = (model_files.FILES[k].split("/")[-1] for k in ("checkpoints", "loras"))
IPADAPTER, CLIP_VISION, CONTROLNET = (model_files.PEER_FILES[k].split("/")[-1] for k in ("ipadapter", "clip-vision", "controlnet"))


def graph(name: str, edits: str = EDITS, ipadapter: bool = True, lora: bool = True, controlnet: bool = True,
          ipadapter_last: bool = False) -> dict:
    """Checkpoint -> LoRA -> IP-Adapter (reference image, ViT-H) -> Region-Guided Cross-Attention (strict) -> probe ->
    Latent Background Blend -> KSampler with a ControlNet on the target and the negative -> paste, decode, save.
    ``ipadapter_last``: IP-Adapter after Region-Guided Cross-Attention instead."""
    model = ["1", 0]
    nodes = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "2": {"class_type": "LoadImage", "inputs": {"image": "artificial_img03.jpg"}},
        "3": {"class_type": "LoadImageMask", "inputs": {"image": "wolf_mask.png", "channel": "red"}},
        "4": {"class_type": "LoadImageMask", "inputs": {"image": "moon_mask.png", "channel": "red"}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "artificial_img01.jpg"}},  # IP-Adapter's reference
        "6": {"class_type": "LeakFreeObjectRestrictedEncode", "inputs": {"clip": ["1", 1], "edits": edits, "eos_mode": "object"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": "blurry"}},
        "8": {"class_type": "LeakFreeObjectMasksPainted", "inputs": {"edit_plan": ["6", 2], "mask_1": ["3", 0], "mask_2": ["4", 0],
                                                                      "dilation_percent": 4.0, "image": ["2", 0]}},
        "9": {"class_type": "VAEEncode", "inputs": {"pixels": ["2", 0], "vae": ["1", 2]}},
        "11": {"class_type": "IPAdapterModelLoader", "inputs": {"ipadapter_file": IPADAPTER}},
        "12": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": CLIP_VISION}},
    }

    def regions(model):
        nodes["14"] = {"class_type": "LeakFreeRegionGuidedCrossAttention", "inputs": {
            "model": model, "target": ["6", 0], "object_masks": ["8", 0], "isolation": "strict", "start_percent": 0.0, "end_percent": 1.0}}
        return ["14", 0]

    def image_prompt(model):
        nodes["13"] = {"class_type": "IPAdapterAdvanced", "inputs": {
            "model": model, "ipadapter": ["11", 0], "image": ["5", 0], "clip_vision": ["12", 0], "weight": 1.0, "weight_type": "linear",
            "combine_embeds": "concat", "start_at": 0.0, "end_at": 1.0, "embeds_scaling": "V only"}}
        return ["13", 0]

    if lora:
        nodes["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": LORA, "strength_model": 0.5}}
        model = ["10", 0]
    chain = [regions] if not ipadapter else [regions, image_prompt] if ipadapter_last else [image_prompt, regions]
    for apply in chain:
        model = apply(model)
    nodes["15"] = {"class_type": "TestIsolationProbe", "inputs": {"model": model, "name": name}}
    positive, negative = ["6", 0], ["7", 0]
    if controlnet:
        nodes["16"] = {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}}
        nodes["17"] = {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": positive, "negative": negative, "control_net": ["16", 0], "image": ["2", 0], "strength": 1.0,
            "start_percent": 0.0, "end_percent": 1.0}}
        positive, negative = ["17", 0], ["17", 1]
    nodes.update({
        "18": {"class_type": "LeakFreeLatentBackgroundBlend", "inputs": {"samples": ["9", 0], "object_masks": ["8", 0], "model": ["15", 0],
                                                                          "end_percent": 1.0, "feather": 0}},
        "19": {"class_type": "KSampler", "inputs": {"model": ["18", 1], "seed": 3, "steps": 1, "cfg": 3.0, "sampler_name": "euler",
                                                     "scheduler": "normal", "positive": positive, "negative": negative,
                                                     "latent_image": ["18", 0], "denoise": 1.0}},
        "20": {"class_type": "LeakFreeLatentBackgroundPaste", "inputs": {"samples": ["19", 0], "source": ["9", 0]}},
        "21": {"class_type": "VAEDecode", "inputs": {"samples": ["20", 0], "vae": ["1", 2]}},
        "22": {"class_type": "SaveImage", "inputs": {"images": ["21", 0], "filename_prefix": name}},
    })
    return nodes


@pytest.fixture(scope="module")
def peer_server(comfy_server, tmp_path_factory):
    """The session's server with IP-Adapter_plus loaded, its model files and the inputs at SIZE px."""
    if IPADAPTER_PLUS not in peer_packs():
        if required():
            pytest.fail("LEAKFREE_REQUIRE_PEERS is set but ComfyUI_IPAdapter_plus is not in the peers folder")
        pytest.skip("no ComfyUI_IPAdapter_plus archive in ../shared/peers (set LEAKFREE_PEERS)")
    assert "IPAdapterAdvanced" in comfy_server.get("/object_info/IPAdapterAdvanced").json(), comfy_server.log()[-3000:]
    model_files.write_model_files(comfy_server.base / "models", only=list(model_files.PEER_FILES))
    scratch = tmp_path_factory.mktemp("peer-inputs")
    runner.scale_inputs(graph("scale"), SIZE, ROOT / "example_inputs", scratch)
    for image in scratch.iterdir():
        comfy_server.upload(image)
    return comfy_server


def run(server, name: str, **variant) -> dict:
    entry = server.run(graph(name, **variant))
    assert entry["status"]["status_str"] == "success", json.dumps(execution_error(entry), indent=1)[:3000]
    return torch.load(server.base / "output" / f"{name}.pt")


def wolf_pixels(height: int, width: int) -> torch.Tensor:
    """The pixels of the first cross-attention layer that are the wolf's alone: the painted masks at SIZE px, dilated by 4 %
    and put on the layer's grid as Object Masks from Painted Masks and Region-Guided Cross-Attention do."""
    masks = []
    for name in ("wolf_mask.png", "moon_mask.png"):
        with Image.open(ROOT / "example_inputs" / name) as image:
            pixels = np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.NEAREST), dtype=np.float32)
            masks.append(torch.from_numpy(pixels) / 255.0)
    masks = dilate(binarize(torch.stack(masks)), dilation_radius(SIZE, SIZE))
    return region_weights(resize_masks(masks, height, width))[:, 1] == 1


def test_ipadapter_lora_and_controlnet_act_and_isolation_holds(peer_server):
    """Five runs of the graph: the edit, the moon's prompt changed, without IP-Adapter, without the LoRA, and with
    IP-Adapter applied after the region node. SD1.5 IP-Adapter keys its patch by (block, id), and ComfyUI runs a
    (block, id, index) key first, the region program's: IP-Adapter after Region-Guided Cross-Attention used to be
    skipped without a word; the region program now runs it."""
    base, changed = run(peer_server, "peers-base"), run(peer_server, "peers-moon-changed", edits=MOON_CHANGED)
    side = int(base["attn2"].shape[1] ** 0.5)
    wolf = wolf_pixels(side, side)
    assert wolf.sum() > 10
    assert torch.equal(base["attn2"][:, wolf], changed["attn2"][:, wolf])  # the moon's text never reaches the wolf's region
    assert not torch.equal(base["attn2"][:, ~wolf], changed["attn2"][:, ~wolf])
    residuals = [(a, b) for kind in base["control"] for a, b in zip(base["control"][kind], changed["control"][kind])]
    assert residuals and all(torch.equal(a, b) for a, b in residuals)  # the ControlNet reads no object's text
    assert any(a.abs().max() > 0 for a, _ in residuals)  # and acts
    for removed in ("ipadapter", "lora"):
        without = run(peer_server, f"peers-without-{removed}", **{removed: False})
        assert not torch.equal(without["attn2"][:, wolf], base["attn2"][:, wolf]), f"{removed} does not act"
    assert torch.equal(run(peer_server, "peers-ipadapter-last", ipadapter_last=True)["attn2"], base["attn2"])
