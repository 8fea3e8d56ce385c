"""Grounding-DINO and SAM in ComfyUI: the model folders, a loader node base, cached loading on ComfyUI's devices,
and the per-image Grounded-SAM loop with its progress bar."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch

import comfy.model_management as model_management
import comfy.utils
import folder_paths
from comfy_api.latest import io

from ..attention.plan import EditPlan
from ..masking import grounded_sam
from ..masking.bert import BERT_FOLDER
from ..masking.checkpoints import ModelFileError, is_transformers_folder
from ..masking.grounding_dino import ObjectPhraseError, load_grounding_dino, load_transformers_grounding_dino
from ..masking.ops import background_mask
from ..masking.sam import load_sam, load_transformers_sam
from ..masking.quality import mask_problems
from .errors import NodeInputError
from .object_masks import finish_object_masks, object_names
from .sockets import CATEGORY

DINO_FOLDER, SAM_FOLDER = "grounding-dino", "sams"
MODEL_EXTENSIONS = {".pth", ".pt", ".bin", ".safetensors"}


def register_model_folder(name: str, extensions: set[str]) -> None:
    """``models/<name>`` plus any path ``extra_model_paths.yaml`` already gave for ``name``."""
    default = os.path.join(folder_paths.models_dir, name)
    if name in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[name][1].update(extensions)
        folder_paths.add_model_folder_path(name, default)
    else:
        folder_paths.folder_names_and_paths[name] = ([default], set(extensions))


register_model_folder(DINO_FOLDER, MODEL_EXTENSIONS)
register_model_folder(SAM_FOLDER, MODEL_EXTENSIONS)
register_model_folder(BERT_FOLDER, {".txt", ".json"})

_loaded: dict[str, tuple[tuple, object]] = {}  # one model per loader kind: (file identity, model)


def file_identity(path: str) -> tuple:
    stat = os.stat(path)
    return path, stat.st_mtime_ns, stat.st_size


def _transformers_folder(folder_name: str, path: str) -> Path | None:
    """The folder of ``path`` when it is a transformers-format model folder (config.json) below models/<folder_name>."""
    folder = Path(path).parent
    roots = {Path(p).resolve() for p in folder_paths.get_folder_paths(folder_name)}
    return folder if is_transformers_folder(folder) and folder.resolve() not in roots else None


def _load_detector(path: str):
    folder = _transformers_folder(DINO_FOLDER, path)
    if folder is not None:
        return load_transformers_grounding_dino(folder)
    return load_grounding_dino(path, folder_paths.get_folder_paths(BERT_FOLDER))


def _load_segmenter(path: str):
    folder = _transformers_folder(SAM_FOLDER, path)
    return load_transformers_sam(folder) if folder is not None else load_sam(path)


def load_model(kind: str, folder: str, name: str, node: str):
    """The model in ``models/<folder>/<name>``: reused while the file is unchanged, else loaded onto the offload device."""
    path = folder_paths.get_full_path(folder, name)
    if path is None:
        raise NodeInputError(f"{node}: '{name}' is not in models/{folder}. Put the file there and refresh the page.")
    identity = file_identity(path)
    cached = _loaded.get(kind)
    if cached is None or cached[0] != identity:
        _loaded.pop(kind, None)
        try:
            model = (_load_detector if kind == "detector" else _load_segmenter)(path)
        except ModelFileError as error:
            raise NodeInputError(f"{node}: {error} Put an intact {kind} checkpoint in models/{folder}/ and pick it here.") from None
        model.model.to(model_management.unet_offload_device())
        _loaded[kind] = (identity, model)
    return _loaded[kind][1]


class ModelLoaderNode(io.ComfyNode):
    """A loader node for one file of ``FOLDER``, giving a ``SOCKET`` output; subclasses name them."""

    NODE_ID = DISPLAY_NAME = DESCRIPTION_TEXT = FOLDER = KIND = ""
    SOCKET = None

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=cls.NODE_ID,
            display_name=cls.DISPLAY_NAME,
            category=f"{CATEGORY}/masks",
            description=cls.DESCRIPTION_TEXT,
            inputs=[io.Combo.Input("model_name", options=folder_paths.get_filename_list(cls.FOLDER),
                                   tooltip=f"A file in models/{cls.FOLDER} (or any file of a transformers-format folder there).")],
            outputs=[cls.SOCKET.Output(display_name=cls.KIND, tooltip="For Object Masks from Grounded-SAM (LeakFree).")],
        )

    @classmethod
    def fingerprint_inputs(cls, model_name):
        path = folder_paths.get_full_path(cls.FOLDER, model_name)
        return str(file_identity(path)) if path else model_name

    @classmethod
    def execute(cls, model_name):
        return io.NodeOutput(load_model(cls.KIND, cls.FOLDER, model_name, cls.DISPLAY_NAME))


@contextmanager
def models_on_device(*wrappers):
    """Run the wrapped models on ComfyUI's device, then move them back to the offload device."""
    for wrapper in wrappers:
        wrapper.model.to(model_management.get_torch_device())
    try:
        yield
    finally:
        for wrapper in wrappers:
            wrapper.model.to(model_management.unet_offload_device())
        model_management.soft_empty_cache()


def grounded_sam_masks(image: torch.Tensor, plan: EditPlan, detector, segmenter, options: dict, radius: int, overlap: str, node: str):
    """Object masks ``[images x objects, H, W]``, backgrounds ``[images, H, W]``, labelled previews and warnings, image by image.

    ``options``: box_threshold, text_threshold, instances, on_missing (see masking.grounded_sam.object_masks).
    """
    progress = comfy.utils.ProgressBar(image.shape[0])
    masks, backgrounds, previews, warnings = [], [], [], []
    with models_on_device(detector, segmenter):
        for number, picture in enumerate(image):
            where = f"image {number + 1} of {image.shape[0]}: " if image.shape[0] > 1 else ""
            try:
                found = grounded_sam.object_masks(picture, plan.objects, detector, segmenter, dilation=radius, **options)
            except ObjectPhraseError as error:
                raise NodeInputError(f"{node}: {where}{error}") from None
            problems = [f"{', '.join(found.missing)} not found: edited without a region mask (everywhere the other objects are not)."] \
                if found.missing else []
            errors, alike = mask_problems(found.masks, object_names(plan))
            resolved, preview, image_warnings = finish_object_masks(found.masks, plan, overlap, picture, found.notes, problems + errors + alike)
            warnings += [where + warning for warning in image_warnings]
            masks.append(resolved)
            backgrounds.append(background_mask(resolved))
            previews.append(preview)
            progress.update_absolute(number + 1)
    return torch.cat(masks), torch.cat(backgrounds), torch.stack(previews), warnings
