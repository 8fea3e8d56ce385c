"""How much of the leak comes back on Flux in the set-ups the routing cannot make bit-exact, and in the ones it can.

On the tiny test Flux (harness/random_models.py: random weights, ComfyUI's own classes), 4 Euler steps of the
``simple`` scheduler, two objects (wolf top-left, moon bottom-right): the moon's prompt is changed, and the table gives
how much the wolf's region moved, as a fraction of how much the moon's region moved (mean absolute change of the
final latent), and as a share of the unpatched model's figure (the leak the routing exists to remove):

- unpatched: plain Flux on the target prompt (the reference leak);
- routed: Region-Guided Joint Attention over the whole sampling (0 by construction);
- window 0.25-1.00 / 0.00-0.75: the routing off for the first / last of the 4 steps;
- CFG 3, negative plain / routed: a negative prompt at CFG 3 with the node's ``negative`` input;
- ControlNet, base prompt / background prompt: an XLabs-form Flux ControlNet at strength 1 reading the base prompt (as
  it did before) or the background prompt (as it does now); its blocks are not routed either way.

    python3 -m bench.flux_leak [--steps 4]
"""
from __future__ import annotations

import argparse
import sys

from harness import comfy_env

EDITS = "wolf -> brown-colored goat\nmoon -> moon made of gold"
CHANGED = "wolf -> brown-colored goat\nmoon -> moon made of green cheese"
LATENT = (1, 16, 16, 16)


def setup():
    comfy_env.prepare_comfy()
    comfy_env.register_pack()


def leak_table(steps: int = 4) -> dict[str, float]:
    """{set-up: wolf region change / moon region change} for the set-ups of the module docstring."""
    import comfy.sample
    import torch
    from nodes import ControlNetApplyAdvanced

    from harness import random_models
    from harness.editing import encode, object_masks
    from leakfree_edit.integration import flux as flux_glue
    from leakfree_edit.masking.token_grid import token_regions
    from leakfree_edit.nodes.encode_flux import ObjectRestrictedEncodeFlux
    from leakfree_edit.nodes.joint_attention import RegionGuidedJointAttention

    clip, plain = random_models.flux_clip(), random_models.flux()
    masks = object_masks(8 * LATENT[2], 8 * LATENT[3])
    grid = token_regions(masks, 2, *LATENT[-2:], 2)[0].view(LATENT[2] // 2, LATENT[3] // 2)
    pixels = grid.repeat_interleave(2, 0).repeat_interleave(2, 1)
    latent = torch.randn(LATENT, generator=torch.Generator().manual_seed(3))
    negative = encode(clip, "blurry, low quality")
    controlnet = random_models.flux_controlnet()
    hint = torch.rand(1, 8 * LATENT[2], 8 * LATENT[3], 3, generator=torch.Generator().manual_seed(4))

    def run(edits, routing: dict | None, cfg=1.0, control=False, base_prompt_controlnet=False):
        target, _, _ = ObjectRestrictedEncodeFlux.execute(clip, edits, "")
        model = plain if routing is None else RegionGuidedJointAttention.execute(plain, target, masks, **routing)[0]
        positive, uncond = target, (negative if cfg > 1 else target)
        if control:
            positive, uncond = ControlNetApplyAdvanced().apply_controlnet(positive, uncond, controlnet, hint, 1.0, 0.0, 1.0)
        if base_prompt_controlnet:  # the ControlNet reads the cond's own text, as before the pack gave it the background
            model = model.clone()
            model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, flux_glue.WRAPPER_KEY)
        noise = torch.randn(LATENT, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            return comfy.sample.sample(model, noise, steps, cfg, "euler", "simple", positive, uncond, latent, seed=0, disable_pbar=True)

    import comfy.patcher_extension

    setups = {
        "unpatched": dict(routing=None),
        "routed": dict(routing={}),
        "window 0.25-1.00": dict(routing={"start_percent": 0.25}),
        "window 0.00-0.75": dict(routing={"end_percent": 0.75}),
        "CFG 3, negative plain": dict(routing={"negative": "plain"}, cfg=3.0),
        "CFG 3, negative routed": dict(routing={}, cfg=3.0),
        "ControlNet, base prompt": dict(routing={}, control=True, base_prompt_controlnet=True),
        "ControlNet, background prompt": dict(routing={}, control=True),
    }
    table = {}
    for name, options in setups.items():
        out, changed = run(EDITS, **options), run(CHANGED, **options)
        moved = (out - changed).abs()
        table[name] = float(moved[..., pixels == 1].mean() / moved[..., pixels == 2].mean())
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args(argv)
    setup()
    table = leak_table(args.steps)
    reference = table["unpatched"]
    print(f"tiny test Flux, {args.steps} Euler steps (simple), the moon's prompt changed: the wolf region's change / the moon region's")
    for name, value in table.items():
        print(f"  {name:30s} {value:9.2e}   {100 * value / reference:6.1f} % of unpatched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
