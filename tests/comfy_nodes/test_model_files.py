"""harness/model_files.py: random-weight files in the real formats, loaded by ComfyUI's and the pack's own loaders."""
import logging
import os
import time

import pytest
import torch

from harness import model_files

LCM_MODULES, LCM_MODULES_SDXL = 278, 788


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    return models, model_files.write_model_files(models)


@pytest.fixture(scope="module")
def checkpoint(written):
    """(model, clip, vae) from CheckpointLoaderSimple (ComfyUI's load_checkpoint_guess_config) on models/checkpoints."""
    import comfy.model_management
    import folder_paths
    import nodes

    path = written[1]["checkpoints"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(folder_paths.folder_names_and_paths, "checkpoints", ([str(path.parent)], {".safetensors"}))
        patch.setattr(folder_paths, "filename_list_cache", {})
        assert path.name in folder_paths.get_filename_list("checkpoints")
        loaded = nodes.CheckpointLoaderSimple().load_checkpoint(path.name)
    yield loaded
    comfy.model_management.unload_all_models()


@pytest.fixture
def comfy_warnings(caplog):
    """ComfyUI's log records at WARNING and above during the test."""
    caplog.set_level(logging.WARNING)
    return lambda: [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_files_have_the_user_facing_names_and_layouts(written):
    from safetensors import safe_open

    models, paths = written
    assert {name: path.relative_to(models).as_posix() for name, path in paths.items()} == {
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
    with safe_open(paths["checkpoints"], "pt") as file:  # the original SD1.5 single-file layout, fp16
        keys = list(file.keys())
        dtypes = {file.get_slice(k).get_dtype() for k in keys}
    assert dtypes == {"F16"}
    prefixes = {k.split(".")[0] + "." + k.split(".")[1] for k in keys}
    assert prefixes == {"model.diffusion_model", "cond_stage_model.transformer", "first_stage_model.encoder",
                        "first_stage_model.decoder", "first_stage_model.quant_conv", "first_stage_model.post_quant_conv"}
    with safe_open(paths["loras"], "pt") as file:
        lora_keys = list(file.keys())
    modules = {k.rsplit(".", 2)[0] if k.endswith(".weight") else k.rsplit(".", 1)[0] for k in lora_keys}
    assert len(modules) == LCM_MODULES and len(lora_keys) == 3 * LCM_MODULES
    assert all(m.startswith("lora_unet_") for m in modules)
    assert {k.removeprefix(m) for m in modules for k in lora_keys if k.startswith(m + ".")} == {
        ".lora_down.weight", ".lora_up.weight", ".alpha"}
    dino = torch.load(paths["grounding-dino"], map_location="cpu", weights_only=True)
    assert list(dino) == ["model"] and all(k.startswith("module.") for k in dino["model"])
    assert dino["model"]["module.bert.embeddings.word_embeddings.weight"].shape == (30522, 768)
    sam = torch.load(paths["sams"], map_location="cpu", weights_only=True)
    assert sam["image_encoder.patch_embed.proj.weight"].shape == (768, 3, 16, 16)
    assert paths["bert-base-uncased"].read_bytes() == model_files.shipped_vocab().read_bytes()
    assert len(paths["bert-base-uncased"].read_text().splitlines()) == 30522


def test_checkpoint_loads_as_sd15_with_clip_and_vae(checkpoint, written):
    import comfy.supported_models

    model, clip, vae = checkpoint
    assert type(model.model.model_config) is comfy.supported_models.SD15
    assert clip is not None and vae is not None
    assert clip.cond_stage_model.clip_l.transformer.text_model.encoder.layers.__len__() == 12  # CLIP-L
    assert vae.latent_channels == 4


def test_lora_matches_every_key_and_changes_the_output(checkpoint, written, comfy_warnings, monkeypatch):
    import comfy.lora
    import comfy.model_management
    import comfy.utils
    import folder_paths
    import nodes

    model = checkpoint[0]
    lora_path = written[1]["loras"]
    lora = comfy.utils.load_torch_file(str(lora_path), safe_load=True)
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    patches = comfy.lora.load_lora(lora, key_map)
    assert len(patches) == LCM_MODULES

    # LoraLoaderModelOnly, as a workflow runs it, from a models/loras folder.
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "loras", ([str(lora_path.parent)], {".safetensors"}))
    (with_lora,) = nodes.LoraLoaderModelOnly().load_lora_model_only(model, lora_path.name, 1.0)
    messages = comfy_warnings()
    assert not [m for m in messages if "lora key not loaded" in m or "NOT LOADED" in m], messages
    assert len(model.patches) == 0 and len(with_lora.patches) == LCM_MODULES

    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, 768, generator=generator)
    sigma = torch.tensor([1.0])

    def output(patcher):
        comfy.model_management.load_models_gpu([patcher])
        with torch.no_grad():
            return patcher.model.apply_model(latent, sigma, c_crossattn=context).float()

    plain, patched = output(model), output(with_lora)
    assert torch.isfinite(patched).all()
    assert (patched - plain).abs().max() > 1e-3 * plain.abs().max()


def test_sdxl_checkpoint_has_the_released_layout_and_its_lcm_lora_matches_every_module(written):
    """The full-shape SDXL file as the released sd_xl_base_1.0.safetensors is laid out (UNet, CLIP-L and OpenCLIP-G
    under conditioner.embedders, the VAE; fp16, 2.6 B + 0.8 B + 0.08 B parameters), and ComfyUI's LoRA key map for
    SDXL takes every one of the SDXL LCM LoRA's 788 kohya modules. (The real server loads and runs both.)"""
    import comfy.lora
    import comfy.model_detection
    import comfy.utils
    from safetensors import safe_open

    paths = written[1]
    with safe_open(paths["sdxl"], "pt") as file:
        shapes = {k: file.get_slice(k).get_shape() for k in file.keys()}
        dtypes = {k: file.get_slice(k).get_dtype() for k in file.keys()}
    assert {dtypes[k] for k in shapes if "position_ids" not in k and shapes[k]} == {"F16"}  # the weights; as released, 2 buffers are not
    count = lambda prefix: sum(int(torch.Size(v).numel()) for k, v in shapes.items() if k.startswith(prefix))
    assert round(count("model.diffusion_model.") / 1e9, 2) == 2.57
    assert count("conditioner.embedders.0.") > 1.2e8 and count("conditioner.embedders.1.") > 6.9e8  # CLIP-L, OpenCLIP-G
    assert shapes["conditioner.embedders.1.model.token_embedding.weight"] == [49408, 1280]
    unet = {k.removeprefix("model.diffusion_model."): torch.empty(0) for k in shapes if k.startswith("model.diffusion_model.")}
    detected = comfy.model_detection.model_config_from_unet(
        {k: torch.empty(shapes["model.diffusion_model." + k], dtype=torch.float16, device="meta") for k in unet}, "")
    assert type(detected).__name__ == "SDXL"
    lora = comfy.utils.load_torch_file(str(paths["sdxl-lcm-lora"]), safe_load=True)
    patches = comfy.lora.load_lora(lora, comfy.lora.model_lora_keys_unet(model_files.unet_on_meta("sdxl"), {}))
    assert len(patches) == LCM_MODULES_SDXL and len(lora) == 3 * LCM_MODULES_SDXL


def test_flux_schnell_file_is_detected_as_schnell(written):
    import comfy.model_detection
    import comfy.utils

    state = comfy.utils.load_torch_file(str(written[1]["flux-schnell"]))
    assert not any(k.startswith("guidance_in.") for k in state)
    assert type(comfy.model_detection.model_config_from_unet(state, "")).__name__ == "FluxSchnell"


def test_grounding_dino_loads_with_the_pack_loader(written):
    from leakfree_edit.masking import grounding_dino

    models, paths = written
    detector = grounding_dino.load_grounding_dino(paths["grounding-dino"], [models / "bert-base-uncased"])
    bert = detector.model.bert.config
    assert (bert.vocab_size, bert.hidden_size, bert.num_hidden_layers, bert.intermediate_size) == (30522, 768, 12, 3072)
    assert detector.model.transformer.num_queries == 900
    detector.short_side = 224  # small, yet over the 900 encoder tokens the query selection needs
    found = detector.detect(torch.rand(96, 128, 3), ["wolf", "full moon"], box_threshold=0.0, text_threshold=0.0)
    assert found.boxes.shape[1] == 4 and len(found.boxes) == len(found.labels) > 0


def test_sam_loads_with_the_pack_loader(written):
    from leakfree_edit.masking import sam

    segmenter = sam.load_sam(written[1]["sams"])
    assert segmenter.model.image_encoder.patch_embed.proj.weight.shape == (768, 3, 16, 16)  # vit_b
    assert len(segmenter.model.image_encoder.blocks) == 12


def test_flux_files_load_with_comfyuis_loaders_as_flux(written, comfy_warnings):
    """UNETLoader and VAELoader as a user's files; the text encoders through DualCLIPLoader's load with the thin-T5 override."""
    import comfy.model_management
    import comfy.supported_models
    import folder_paths
    import nodes

    models, paths = written
    from harness.custom_nodes import flux_text_encoders_node as thin

    with pytest.MonkeyPatch.context() as patch:
        for folder in ("diffusion_models", "text_encoders", "vae"):
            patch.setitem(folder_paths.folder_names_and_paths, folder, ([str(models / folder)], {".safetensors"}))
        patch.setattr(folder_paths, "filename_list_cache", {})
        model, = nodes.UNETLoader().load_unet("flux1-dev.safetensors", "default")
        vae, = nodes.VAELoader().load_vae("ae.safetensors")
        clip, = thin.ThinDualCLIPLoader().load_clip("clip_l.safetensors", "t5xxl_fp16.safetensors", "flux")
    assert type(model.model.model_config) is comfy.supported_models.Flux
    flux = model.model.diffusion_model.params
    assert (flux.hidden_size, flux.num_heads, flux.depth, flux.depth_single_blocks, flux.context_in_dim) == (3072, 24, 1, 1, 4096)
    assert vae.latent_channels == 16
    assert len(clip.cond_stage_model.clip_l.transformer.text_model.encoder.layers) == 12  # the real CLIP-L
    cond, pooled = clip.encode_from_tokens(clip.tokenize("a goat"), return_pooled=True)
    assert cond.shape == (1, 256, 4096) and pooled.shape == (1, 768) and torch.isfinite(cond).all()
    assert not [m for m in comfy_warnings() if "missing" in m], comfy_warnings()  # every weight came from the files
    comfy.model_management.unload_all_models()


def test_second_call_links_the_cached_files(written, tmp_path, capsys):
    start = time.perf_counter()
    again = model_files.write_model_files(tmp_path / "models")
    assert time.perf_counter() - start < 5
    assert capsys.readouterr().out.count(", cached, ") == len(model_files.FILES)
    for name, path in written[1].items():
        assert os.path.samefile(again[name], path)
        assert os.path.samefile(path, model_files.cache_dir() / model_files.FILES[name])
    assert model_files.write_model_files(tmp_path / "models", only=("loras",)) == {"loras": again["loras"]}


def test_a_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "cache" / "checkpoints" / "model.safetensors"

    def fails(out):
        out.write_bytes(b"half a file")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        model_files._write_cached(target, fails)
    assert not target.exists() and list(target.parent.iterdir()) == []
