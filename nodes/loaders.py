"""Grounding-DINO and SAM loaders: the user's own checkpoints from models/grounding-dino and models/sams."""
from __future__ import annotations

import os
from pathlib import Path

import comfy.model_management as model_management

from ..masking import grounded_sam
from .comfy_compat import CATEGORY, NodeInputError

try:  # ComfyUI proper
    import folder_paths
except ImportError:  # the pip-installable ComfyUI package
    from comfy.cmd import folder_paths

DINO_FOLDER, SAM_FOLDER, BERT_FOLDER = "grounding-dino", "sams", grounded_sam.BERT_FOLDER
MODEL_EXTENSIONS = {".pth", ".pt", ".bin", ".safetensors"}
DETECTOR_TYPE, SEGMENTER_TYPE = "LEAKFREE_GROUNDING_DINO", "LEAKFREE_SAM"


def register_model_folder(name: str, extensions: set[str]) -> None:
    """``models/<name>`` plus any path ``extra_model_paths.yaml`` already gave for ``name``."""
    default = os.path.join(folder_paths.models_dir, name)
    if name in folder_paths.folder_names_and_paths.keys():
        folder_paths.folder_names_and_paths[name][1].update(extensions)
        folder_paths.add_model_folder_path(name, default)
    else:
        folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


register_model_folder(DINO_FOLDER, MODEL_EXTENSIONS)
register_model_folder(SAM_FOLDER, MODEL_EXTENSIONS)
register_model_folder(BERT_FOLDER, {".txt", ".json"})

_loaded: dict[str, tuple[tuple, object]] = {}  # one model per loader kind: (file identity, model)


def _file_identity(path: str) -> tuple:
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def _load_cached(kind: str, path: str, load):
    """Reuse the model already loaded from this exact file; load (onto the offload device) otherwise."""
    identity = _file_identity(path)
    cached = _loaded.get(kind)
    if cached is None or cached[0] != identity:
        _loaded.pop(kind, None)
        model = load()
        model.model.to(model_management.unet_offload_device())
        _loaded[kind] = (identity, model)
    return _loaded[kind][1]


def _resolve(folder: str, name: str, node: str) -> str:
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise NodeInputError(f"{node}: '{name}' is not in models/{folder}. Put the file there and refresh the page.")
    return path


def _transformers_folder(folder_name: str, path: str) -> Path | None:
    """The folder of ``path`` when it is a transformers-format model folder (config.json) below models/<folder_name>."""
    folder = Path(path).parent
    roots = {Path(p).resolve() for p in folder_paths.get_folder_paths(folder_name)}
    return folder if grounded_sam.is_transformers_folder(folder) and folder.resolve() not in roots else None


def _load(node: str, kind: str, path: str, load):
    try:
        return _load_cached(kind, path, load)
    except grounded_sam.ModelFileError as error:
        raise NodeInputError(f"{node}: {error}") from None


class GroundingDinoLoader:
    NODE = "Grounding-DINO Loader (LeakFree)"
    DESCRIPTION = (
        "Loads a Grounding-DINO detector from models/grounding-dino: groundingdino_swint_ogc.pth or "
        "groundingdino_swinb_cogcoor.pth (Swin-T/B told apart by the weights; the .cfg.py is not needed and never "
        "executed), or a transformers-format folder (pick any file inside it). The BERT text encoder comes from the "
        "checkpoint; its tokenizer vocabulary from models/bert-base-uncased/vocab.txt or the local Hugging Face "
        "cache. Nothing is downloaded."
    )
    CATEGORY = f"{CATEGORY}/masks"
    RETURN_TYPES = (DETECTOR_TYPE,)
    RETURN_NAMES = ("detector",)
    OUTPUT_TOOLTIPS = ("The detector for Object Masks (Grounded-SAM).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (folder_paths.get_filename_list(DINO_FOLDER), {
            "tooltip": "A file in models/grounding-dino (or any file of a transformers-format folder there)."})}}

    @classmethod
    def IS_CHANGED(cls, model_name):
        path = folder_paths.get_full_path(DINO_FOLDER, model_name)
        return str(_file_identity(path)) if path else model_name

    def load(self, model_name):
        path = _resolve(DINO_FOLDER, model_name, self.NODE)
        folder = _transformers_folder(DINO_FOLDER, path)
        if folder is not None:
            return (_load(self.NODE, "detector", path, lambda: grounded_sam.load_transformers_folder(folder, "grounding-dino")),)
        bert_dirs = folder_paths.get_folder_paths(BERT_FOLDER)
        return (_load(self.NODE, "detector", path, lambda: grounded_sam.load_grounding_dino(path, bert_dirs)),)


class SAMLoader:
    NODE = "SAM Loader (LeakFree)"
    DESCRIPTION = (
        "Loads a Segment Anything model from models/sams: sam_vit_b_01ec64.pth, sam_vit_l_0b3195.pth or "
        "sam_vit_h_4b8939.pth (the size is read from the weights, not the name), or a transformers-format "
        "SamModel folder (pick any file inside it). Weights are read without running pickled code."
    )
    CATEGORY = f"{CATEGORY}/masks"
    RETURN_TYPES = (SEGMENTER_TYPE,)
    RETURN_NAMES = ("segmenter",)
    OUTPUT_TOOLTIPS = ("The segmenter for Object Masks (Grounded-SAM).",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (folder_paths.get_filename_list(SAM_FOLDER), {
            "tooltip": "A file in models/sams (or any file of a transformers-format folder there)."})}}

    @classmethod
    def IS_CHANGED(cls, model_name):
        path = folder_paths.get_full_path(SAM_FOLDER, model_name)
        return str(_file_identity(path)) if path else model_name

    def load(self, model_name):
        path = _resolve(SAM_FOLDER, model_name, self.NODE)
        folder = _transformers_folder(SAM_FOLDER, path)
        if folder is not None:
            return (_load(self.NODE, "segmenter", path, lambda: grounded_sam.load_transformers_folder(folder, "sam")),)
        return (_load(self.NODE, "segmenter", path, lambda: grounded_sam.load_sam(path)),)


NODE_CLASS_MAPPINGS = {
    "LeakFreeGroundingDinoLoader": GroundingDinoLoader,
    "LeakFreeSAMLoader": SAMLoader,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LeakFreeGroundingDinoLoader": GroundingDinoLoader.NODE,
    "LeakFreeSAMLoader": SAMLoader.NODE,
}
