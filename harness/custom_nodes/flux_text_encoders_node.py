"""Test-only custom node file, linked into the test server's custom_nodes: DualCLIPLoader as it loads Flux's text
encoders, plus ComfyUI's own per-encoder config overrides, so the thin random-weight clip_l and t5xxl files of
harness/model_files.py load as what they are. ComfyUI builds T5-XXL from its fixed config whatever the file holds
(comfy/text_encoders/t5_config_xxl.json, 4.7 B parameters: 9.4 TFLOP for one edit's prompts, minutes on a CI CPU).
The server tests run the Flux workflow with this loader in DualCLIPLoader's place; every other node is the real one."""
import comfy.sd
import folder_paths
from nodes import DualCLIPLoader

from harness import random_models  # the test server puts the pack's folder on PYTHONPATH


class ThinDualCLIPLoader(DualCLIPLoader):
    def load_clip(self, clip_name1, clip_name2, type, device="default"):
        paths = [folder_paths.get_full_path_or_raise("text_encoders", name) for name in (clip_name1, clip_name2)]
        clip = comfy.sd.load_clip(ckpt_paths=paths, embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                  clip_type=getattr(comfy.sd.CLIPType, type.upper()), model_options=random_models.flux_text_options("reduced"))
        return (clip,)


NODE_CLASS_MAPPINGS = {"TestThinDualCLIPLoader": ThinDualCLIPLoader}
