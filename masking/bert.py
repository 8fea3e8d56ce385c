"""Grounding-DINO's BERT text encoder, offline: the tokenizer vocabulary from a local folder, the config read from
the checkpoint's own tensors, and the encoder called through the parts of transformers' BERT that every version
has. Nothing here reaches a network or imports ComfyUI."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .checkpoints import ModelFileError

BERT_FOLDER = "bert-base-uncased"
BERT_CACHE_NAMES = ("models--bert-base-uncased", "models--google-bert--bert-base-uncased")


def bert_search_dirs(model_dirs: list[str | os.PathLike]) -> list[Path]:
    """Where a bert-base-uncased tokenizer may live: the given folders, then the local Hugging Face cache."""
    from huggingface_hub import constants

    cached = [
        snapshot
        for name in BERT_CACHE_NAMES
        for snapshot in sorted((Path(constants.HF_HUB_CACHE) / name / "snapshots").glob("*"))
    ]
    return [Path(d) for d in model_dirs] + cached


def find_bert_tokenizer(search_dirs: list[Path]) -> Path:
    """The first folder holding ``vocab.txt``; otherwise a ``ModelFileError`` saying where to put it."""
    for folder in search_dirs:
        if (folder / "vocab.txt").is_file():
            return folder
    where = ", ".join(str(d) for d in search_dirs) or "(no folder registered)"
    raise ModelFileError(
        "Grounding-DINO needs the bert-base-uncased tokenizer vocabulary and it is not on this machine "
        f"(looked in: {where}). Put 'vocab.txt' (and, optionally, 'tokenizer_config.json') from "
        f"https://huggingface.co/google-bert/bert-base-uncased into ComfyUI/models/{BERT_FOLDER}/. "
        "The BERT weights come from the Grounding-DINO checkpoint itself; nothing is downloaded."
    )


def load_bert_tokenizer(folder: Path):
    from transformers import BertTokenizer

    return BertTokenizer.from_pretrained(str(folder), local_files_only=True)


def bert_config_from_state(state: dict, prefix: str = "bert."):
    """BERT's config read from the checkpoint's own tensor shapes (heads: BERT's 64 channels per head)."""
    from transformers import BertConfig

    words = state.get(f"{prefix}embeddings.word_embeddings.weight")
    if words is None:
        raise ModelFileError("the Grounding-DINO checkpoint holds no BERT text encoder (bert.embeddings.*).")
    hidden = int(words.shape[1])
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(prefix)}encoder\.layer\.(\d+)\.", k))}
    return BertConfig(
        vocab_size=int(words.shape[0]),
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=int(state[f"{prefix}encoder.layer.0.intermediate.dense.weight"].shape[0]),
        max_position_embeddings=int(state[f"{prefix}embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(state[f"{prefix}embeddings.token_type_embeddings.weight"].shape[0]),
    )


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A 0/1 mask ``[B, T]`` (every query sees the same keys) or ``[B, T, T]`` (Grounding-DINO's per-phrase blocks)
    as the additive ``[B, 1, T, T]`` logit bias BERT's attention takes: 0 where allowed, the dtype's minimum elsewhere."""
    mask = attention_mask[:, None, :, :] if attention_mask.dim() == 3 else attention_mask[:, None, None, :]
    return (1.0 - mask.to(dtype)) * torch.finfo(dtype).min


class GroundingDinoText(torch.nn.Module):
    """Grounding-DINO's text encoder (``model.bert``): a BERT's embeddings and encoder, called with keyword arguments
    that transformers 4 and 5 share (groundingdino-py's own wrapper passes arguments transformers 5 removed).

    The submodules keep BERT's names, so the checkpoint's ``bert.*`` tensors load as they are; the pooler is kept
    for its tensors only (Grounding-DINO reads the token states, never the pooled output).
    """

    def __init__(self, bert):
        super().__init__()
        self.config, self.embeddings, self.encoder, self.pooler = bert.config, bert.embeddings, bert.encoder, bert.pooler

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        hidden = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, device=input_ids.device)
        return {"last_hidden_state": self.encoder(hidden, attention_mask=additive_mask(attention_mask, hidden.dtype))[0]}
