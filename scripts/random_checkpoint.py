"""Write a random-weight SD1.5 checkpoint in the original single-file layout, for trying the pack in a real
ComfyUI without downloading a model (the pictures are noise; every loader and node runs for real).

    python scripts/random_checkpoint.py ComfyUI/models/checkpoints/random_sd15.safetensors
"""
from __future__ import annotations

import sys
from pathlib import Path

import comfy_env


def main(argv) -> int:
    out = Path(argv[0] if argv else "random_sd15.safetensors")
    comfy_env.prepare_comfy()
    import torch
    import comfy.ldm.models.autoencoder
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import random_models

    torch.set_grad_enabled(False)
    model = random_models.unet("sd15", "full")
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    clip = comfy.sd.CLIP(target)  # the real CLIP-L shape
    random_models.randomize_(clip.cond_stage_model, std=0.02)
    ddconfig = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
                "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
    autoencoder = random_models.randomize_(comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=ddconfig, embed_dim=4), std=0.02)
    vae = comfy.sd.VAE(sd=autoencoder.state_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    comfy.sd.save_checkpoint(str(out), model, clip, vae)
    print(f"wrote {out} ({out.stat().st_size / 2**30:.2f} GiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
