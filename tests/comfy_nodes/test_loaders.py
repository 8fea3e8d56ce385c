"""Loader nodes: real checkpoint layouts from models/ folders, clear errors for bad files, no network."""
import argparse
import os
import shutil
import socket

import pytest
import torch

from harness.gsam_models import CallCounter, save_tiny_transformers_grounding_dino, save_tiny_transformers_sam, shipped_vocab_dir, small_grounding_dino, tiny_sam
from leakfree_edit.attention.plan import EditPlan, ObjectEdit
from leakfree_edit.masking import bert, sam
from leakfree_edit.masking import grounded_sam as gs
from leakfree_edit.masking import grounding_dino as gd


@pytest.fixture(scope="module")
def loaders():
    from leakfree_edit.nodes import loaders

    return loaders


@pytest.fixture(scope="module")
def detection():
    from leakfree_edit.integration import detection

    return detection


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, detection):
    """A models/ tree registered the way extra_model_paths.yaml registers one, searched first (another test's folder
    may hold files of the same names) and unregistered after this module."""
    import folder_paths

    root = tmp_path_factory.mktemp("models")
    names = (detection.DINO_FOLDER, detection.SAM_FOLDER, detection.BERT_FOLDER)
    for name in names:
        (root / name).mkdir()
        folder_paths.add_model_folder_path(name, str(root / name), is_default=True)
    shutil.copy(shipped_vocab_dir() / "vocab.txt", root / detection.BERT_FOLDER / "vocab.txt")
    yield root
    for name in names:
        folder_paths.folder_names_and_paths[name][0].remove(str(root / name))


@pytest.fixture(scope="module")
def sam_vit_b_file(models_dir):
    """segment-anything's vit_b with its real keys and shapes, random values, under a misleading name."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    path = models_dir / "sams" / "my_sam_vit_h_named_wrong.pth"
    torch.save(sam_model_registry["vit_b"]().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def dino_file(models_dir):
    """groundingdino-py's layout: {"model": state dict} with DataParallel's "module." prefix (Swin-T, small BERT)."""
    tokenizer = bert.load_bert_tokenizer(shipped_vocab_dir())
    torch.manual_seed(0)
    model = small_grounding_dino(tokenizer)
    path = models_dir / "grounding-dino" / "groundingdino_swint_ogc.pth"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state, "args": argparse.Namespace(backbone="swin_T_224_1k")}, path)
    return path


@pytest.fixture(autouse=True)
def empty_hf_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))


def test_loader_nodes_list_registered_folders(loaders, sam_vit_b_file, dino_file):
    sam_names = loaders.SAMLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    dino_names = loaders.GroundingDinoLoader.INPUT_TYPES()["required"]["model_name"][1]["options"]
    assert sam_vit_b_file.name in sam_names and dino_file.name in dino_names
    for node in (loaders.SAMLoader, loaders.GroundingDinoLoader):
        assert node.CATEGORY == "LeakFreeEdit/masks" and node.DESCRIPTION
        assert all("tooltip" in spec[1] for spec in node.INPUT_TYPES()["required"].values())


def test_sam_checkpoint_loads_with_size_from_weights_not_name(loaders, sam_vit_b_file):
    (segmenter,) = loaders.SAMLoader.execute(sam_vit_b_file.name)
    assert segmenter.model.image_encoder.patch_embed.proj.weight.shape[0] == 768
    saved = torch.load(sam_vit_b_file, weights_only=True)
    assert torch.equal(segmenter.model.state_dict()["mask_decoder.iou_token.weight"], saved["mask_decoder.iou_token.weight"])
    (again,) = loaders.SAMLoader.execute(sam_vit_b_file.name)
    assert again is segmenter  # cached between runs


def test_grounding_dino_checkpoint_loads_with_local_vocabulary(loaders, dino_file):
    (detector,) = loaders.GroundingDinoLoader.execute(dino_file.name)
    with torch.serialization.safe_globals([argparse.Namespace]):
        saved = torch.load(dino_file, weights_only=True)["model"]
    assert torch.equal(detector.model.state_dict()["bert.embeddings.word_embeddings.weight"],
                       saved["module.bert.embeddings.word_embeddings.weight"])
    assert detector.tokenizer.tokenize("brown-colored goat") == ["brown", "-", "colored", "goat"]


def assert_refused(loader, path, message: str) -> None:
    """``loader`` refuses the file just written at ``path`` with an error matching ``message``; the file is removed."""
    try:
        with pytest.raises(ValueError, match=message):
            loader.execute(path.name)
    finally:
        path.unlink()


def test_truncated_file_gives_a_clear_error(loaders, sam_vit_b_file):
    """Whole sentences: what is wrong and where a good file goes (the reason was torch's message, cut at 200 characters)."""
    broken = sam_vit_b_file.with_name("sam_vit_b_01ec64.pth")
    broken.write_bytes(sam_vit_b_file.read_bytes()[: 1 << 20])
    assert_refused(loaders.SAMLoader, broken, r"^SAM Loader \(LeakFree\): cannot read 'sam_vit_b_01ec64.pth': it is truncated: the archive "
                   r"ends after 1,048,576 bytes, before its table of contents \(an interrupted download\)\. Put an intact segmenter "
                   r"checkpoint in models/sams/ and pick it here\.$")


@pytest.mark.parametrize("contents, problem", [
    (b"<!DOCTYPE html><html><body>Sign in to download</body></html>", "it is a web page, not a checkpoint"),
    (bytes(range(256)) * 20, "it is neither a PyTorch nor a safetensors checkpoint"),
], ids=["html-page", "garbage"])
@pytest.mark.parametrize("loader, folder", [("GroundingDinoLoader", "grounding-dino"), ("SAMLoader", "sams")])
def test_a_garbage_file_is_refused_without_torchs_advice(loaders, models_dir, contents, problem, loader, folder):
    """torch's own message for such a file tells to re-run torch.load with weights_only=False: to run the file's code."""
    path = models_dir / folder / "downloaded.pth"
    path.write_bytes(contents)
    node = getattr(loaders, loader)
    with pytest.raises(ValueError) as refused:
        node.execute(path.name)
    path.unlink()
    message = str(refused.value)
    assert message.startswith(f"{node.DISPLAY_NAME}: cannot read 'downloaded.pth': {problem}")
    assert message.endswith(f"checkpoint in models/{folder}/ and pick it here.") and "weights_only" not in message


def test_wrong_model_in_a_loader_says_what_was_expected(loaders, sam_vit_b_file, models_dir):
    wrong = models_dir / "grounding-dino" / "not_dino.pth"
    shutil.copy(sam_vit_b_file, wrong)
    assert_refused(loaders.GroundingDinoLoader, wrong, r"^Grounding-DINO Loader \(LeakFree\): 'not_dino.pth' is not a groundingdino-py")


def test_mismatched_tensors_are_named(loaders, models_dir):
    state = tiny_sam().state_dict()
    state["image_encoder.patch_embed.proj.weight"] = torch.zeros(768, 3, 16, 16)  # claims vit_b, is not
    path = models_dir / "sams" / "odd_sam.pth"
    torch.save(state, path)
    assert_refused(loaders.SAMLoader, path, r"SAM Loader \(LeakFree\): 'odd_sam.pth' does not match.*missing: ")


def test_pickled_code_is_refused(loaders, models_dir):
    path = models_dir / "sams" / "pickled.pth"
    torch.save({"model": os.system}, path)  # the classic payload: a callable that unpickling would import
    assert_refused(loaders.SAMLoader, path, r"SAM Loader \(LeakFree\): cannot read 'pickled.pth': besides tensors it holds pickled Python "
                   r"objects \(posix\.system\), which the pack never loads")


def test_missing_bert_vocabulary_names_the_folder_and_file(loaders, detection, dino_file, models_dir, monkeypatch):
    monkeypatch.setattr(detection.folder_paths, "get_folder_paths",
                        lambda name: [str(models_dir / "empty")] if name == detection.BERT_FOLDER else [str(models_dir / name)])
    detection._loaded.clear()
    with pytest.raises(ValueError, match=r"Grounding-DINO Loader \(LeakFree\): .*'vocab.txt'.*models/bert-base-uncased/"):
        loaders.GroundingDinoLoader.execute(dino_file.name)


def test_transformers_folders_load_through_the_same_loaders(loaders, detection, models_dir):
    """A folder with config.json is a transformers model: pick any file inside it in the loader."""
    torch.manual_seed(0)
    save_tiny_transformers_sam(models_dir / "sams" / "hf-sam")
    save_tiny_transformers_grounding_dino(models_dir / "grounding-dino" / "hf-grounding-dino")
    (segmenter,) = loaders.SAMLoader.execute("hf-sam/model.safetensors")
    (detector,) = loaders.GroundingDinoLoader.execute("hf-grounding-dino/model.safetensors")
    assert isinstance(segmenter, sam.TransformersSam) and isinstance(detector, gd.TransformersGroundingDino)

    image = torch.rand(120, 200, 3)
    detections = detector.detect(image, ["cat", "full moon"], box_threshold=0.0, text_threshold=0.0)
    assert len(detections.boxes) == 20 and set(detections.labels.tolist()) <= {0, 1}
    encoder = CallCounter(segmenter.model.vision_encoder)
    masks = gs.object_masks(image, ["cat", "full moon"], detector, segmenter, 0.0, 0.0, on_missing="unmasked").masks
    assert masks.shape == (2, 120, 200) and encoder.count == 1
    shutil.copytree(models_dir / "grounding-dino" / "hf-grounding-dino", models_dir / "sams" / "misplaced")
    with pytest.raises(ValueError, match=r"SAM Loader \(LeakFree\): 'misplaced' is a transformers 'grounding-dino' folder"):
        loaders.SAMLoader.execute("misplaced/model.safetensors")
    detection._loaded.clear()


def test_nodes_never_open_a_network_connection(loaders, detection, sam_vit_b_file, dino_file, monkeypatch, example_inputs):
    """Load both models from files and make masks with every socket connection failing the test."""
    import numpy as np
    from PIL import Image

    from leakfree_edit.nodes.grounded_sam import ObjectMasksGroundedSAM

    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise AssertionError(f"network connection attempted to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    detection._loaded.clear()
    (detector,) = loaders.GroundingDinoLoader.execute(dino_file.name)
    (segmenter,) = loaders.SAMLoader.execute(sam_vit_b_file.name)
    detector.short_side = 224
    segmenter.model.image_encoder.img_size = 256  # a vit_b at 256 px keeps this test fast; the path is the same
    segmenter.model.image_encoder.pos_embed.data = segmenter.model.image_encoder.pos_embed.data[:, :16, :16]
    segmenter.model.prompt_encoder.image_embedding_size = (16, 16)
    segmenter.model.prompt_encoder.input_image_size = (256, 256)
    segmenter.predictor = sam.SamSegmenter(segmenter.model).predictor
    image = Image.open(example_inputs / "artificial_img01.jpg").convert("RGB").resize((128, 128))
    pixels = torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0)[None]
    plan = EditPlan(edits=(ObjectEdit("tree", "golden tree"), ObjectEdit("couch", "red couch")))
    masks, background, preview = ObjectMasksGroundedSAM.execute(
        pixels, plan, detector, segmenter, 0.0, 0.0, 4.0, "unmasked", "best")
    assert masks.shape == (2, 128, 128) and background.shape == (1, 128, 128) and preview.shape == (1, 128, 128, 3)
    assert attempts == []
    detection._loaded.clear()
