"""DPL as its paper edits, on plain tensors: Prompt-to-Prompt's word alignment and attention replacement, the loss
terms and the thresholds on DPL's 50-step scale; and the batch command taking the mask-free template. The mechanisms on
ComfyUI's random-weight UNet are in tests/comfy_nodes/test_dpl_edit.py."""
import math

import pytest
import torch
import torch.nn.functional as F

from leakfree_edit.attention.dual_branch import SOURCE_COND, TARGET_COND, TARGET_UNCOND, branch_layout
from leakfree_edit.attention.prompt_learning import LearningSettings, attend_loss, background_loss
from leakfree_edit.attention.region_attention import LAYOUT_KEY, PROGRAM_KEY, RegionAttentionProgram, RegionCrossAttention
from leakfree_edit.attention.replacement import MapReplacement, align_windows, aligned_pairs
from leakfree_edit.attention.self_attention import RegionSelfAttention

# --- Prompt-to-Prompt's word alignment and replacement, on plain tensors -------------------------------------

B, E, P = 49406, 49407, 0  # BOS, EOS and padding ids in the planted windows
WOLF, AND, MOON, BROWN, DASH, COLORED, GOAT, MADE, OF, GOLD, RED, BLUE, CAR = range(10, 23)


class Refused(Exception):
    """The error the node layer would pass in (NodeInputError); the math raises what it is given."""



def window(ids, length=16):
    return [B, *ids, E] + [P] * (length - len(ids) - 2)


def test_word_alignment_swaps_refines_and_keeps_words():
    # P2P's global alignment (match 1, mismatch -1, gap 0): equal tokens pair up, the rest are gaps
    assert aligned_pairs([RED, CAR], [BLUE, CAR]) == [(0, None), (None, 0), (1, 1)]
    source = window([WOLF, AND, MOON])  # "wolf and moon"
    target = window([BROWN, DASH, COLORED, GOAT, AND, MOON, MADE, OF, GOLD])  # "brown-colored goat and moon made of gold"
    aligned = align_windows(source, target, [(1, 2), (3, 4)], [(1, 5), (6, 10)], 4, 10)
    mapper, alphas = aligned.mapper, aligned.alphas
    # swap: the four target tokens of line 1 share wolf's map, a quarter each (P2P's replacement mapper)
    assert mapper[1, 1:5].tolist() == [0.25] * 4 and alphas[1:5].tolist() == [1.0] * 4
    # the joiner and the kept word map one to one; the refinement's new words keep their own maps
    assert mapper[2, 5] == 1 and mapper[3, 6] == 1 and alphas[7:10].tolist() == [0.0] * 3 and not mapper[:, 7:10].any()
    # EOS and padding position by position after EOS; BOS to BOS
    assert mapper[0, 0] == 1 and all(mapper[4 + n, 10 + n] == 1 for n in range(6)) and alphas[10:].tolist() == [1.0] * 6
    assert aligned.kept == ((0, 0), (2, 5), (3, 6))  # the target keeps "moon" (and BOS, "and"), not "wolf"
    assert torch.allclose(mapper.sum(dim=1)[mapper.sum(dim=1) > 0], torch.tensor(1.0))  # every source map is passed on whole
    # "red car -> blue car": blue takes red's map one to one, car keeps car
    swap = align_windows(window([RED, CAR]), window([BLUE, CAR]), [(1, 3)], [(1, 3)], 3, 3)
    assert swap.mapper[1, 1] == 1 and swap.mapper[2, 2] == 1 and swap.kept == ((0, 0), (2, 2))


def plain_attention(q, k, v, heads, extra_options):
    """SDPA as ComfyUI's attention computes it, for any value width (the probes use one-hot values)."""
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    out = F.scaled_dot_product_attention(split(q), split(k), split(v))
    return out.transpose(1, 2).reshape(q.shape[0], q.shape[1], -1)


def maps_of(q, k, heads):
    """softmax(q k^T / sqrt(d)) per row and head ``[B, heads, Q, K]``: the definition the replacement is checked against."""
    split = lambda t: t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)
    return (split(q) @ split(k).transpose(-1, -2) / math.sqrt(split(q).shape[-1])).softmax(dim=-1)


def probed(attend, q, k, heads, options):
    """The attention maps a callable applies, read through it with one-hot values ``[B, heads, Q, K]``."""
    tokens = k.shape[1]
    probe = torch.eye(tokens).repeat(1, heads).expand(q.shape[0], -1, -1)
    return attend(q, k, probe, options).view(q.shape[0], q.shape[1], heads, tokens).transpose(1, 2)


def test_replacement_gives_the_target_row_the_source_maps_in_its_steps_only():
    """Rows [target cond, source cond, target uncond] of the dual branch; 4 steps, cross 0.75 (steps 0-2), self 0.5
    (steps 0-1, at the layers 4x below the latent). In the replaced steps the target's conditional cross-attention maps
    are (1 - alpha) P_t + alpha P_s M, after them its own; every other row keeps its own maps throughout."""
    torch.manual_seed(0)
    heads, dim, tokens = 2, 4, 16
    aligned = align_windows(window([WOLF, AND, MOON]), window([BROWN, DASH, COLORED, GOAT, AND, MOON, MADE, OF, GOLD]),
                            [(1, 2), (3, 4)], [(1, 5), (6, 10)], 4, 10)
    term = MapReplacement(alignment=aligned, cross=0.75, self_fraction=0.5, error=Refused, node="Attention Replacement")
    program = RegionAttentionProgram(attention=plain_attention).with_replacement(term)
    layout = branch_layout([TARGET_COND, SOURCE_COND, TARGET_UNCOND], rows=1)
    sample_sigmas = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])

    def options(step, size=(4, 4)):
        return {"n_heads": heads, "original_shape": [3, 4, 16, 16], "activations_shape": [3, 8, *size], PROGRAM_KEY: program,
                LAYOUT_KEY: layout, "sample_sigmas": sample_sigmas, "sigmas": sample_sigmas[step : step + 1]}

    q, k = torch.randn(3, 16, heads * dim), torch.randn(3, tokens, heads * dim)
    own = maps_of(q, k, heads)
    replaced = (1 - aligned.alphas) * own[0] + aligned.alphas * (own[1] @ aligned.mapper)
    cross = RegionCrossAttention()
    for step in range(4):
        applied = probed(cross, q, k, heads, options(step))
        torch.testing.assert_close(applied[0], replaced if step < 3 else own[0])
        torch.testing.assert_close(applied[1:], own[1:])
    # the wolf's map, spread over "brown-colored goat", sums back to it; "made of gold" keeps the target's own maps
    torch.testing.assert_close(replaced[..., 1:5].sum(dim=-1), own[1][..., 1])
    torch.testing.assert_close(replaced[..., 7:10], own[0][..., 7:10])

    pixels = torch.randn(3, 16, heads * dim), torch.randn(3, 16, heads * dim)
    own_self = maps_of(*pixels, heads)
    attend_self = RegionSelfAttention()
    for step, size, swapped in ((0, (4, 4), True), (1, (4, 4), True), (2, (4, 4), False), (0, (8, 8), False)):
        applied = probed(attend_self, *pixels, heads, options(step, size))
        torch.testing.assert_close(applied[0], own_self[1] if swapped else own_self[0])  # 16 x 16 latent: 4 x 4 is 4x below it
        torch.testing.assert_close(applied[1:], own_self[1:])

    with pytest.raises(Refused, match="Dual-Branch Edit Guider"):  # sampled without the guider: no source rows
        cross(q, k, k, {key: value for key, value in options(0).items() if key != LAYOUT_KEY})


# --- the losses, planted ---------------------------------------------------------------------------------------

def test_attend_term_smooths_the_peak_as_attend_and_excite():
    """A word that owns one cell outright: its unsmoothed peak is 1 (no loss); Attend-and-Excite's 3x3 Gaussian
    (sigma 0.5, exp(-((x - 1) / (2 sigma))^2) per axis) leaves the centre weight 1 / (1 + 2 e^-1)^2 of it."""
    attention = torch.full((6, 6, 5), 0.0)
    attention[..., 3] = 1.0  # every cell: the other text token...
    attention[2, 3, 3], attention[2, 3, 2] = 0.0, 1.0  # ...except one, which word 2 owns
    centre = 1 / (1 + 2 * math.exp(-1)) ** 2
    assert float(attend_loss(attention, ((2,),))) == pytest.approx(1 - centre, abs=1e-4)


def test_background_term_is_the_cosine_with_the_background():
    """Maps inside their objects have no cosine with the background mask; a map on the background has cosine 1."""
    background = torch.ones(4, 4)
    background[:2, :2] = background[2:, 2:] = 0
    inside = torch.zeros(2, 4, 4)
    inside[0, :2, :2] = inside[1, 2:, 2:] = 1.0
    assert float(background_loss(inside, background)) == 0.0
    leaking = inside.clone()
    leaking[1] = background  # object 2 drawn on the background alone
    assert float(background_loss(leaking, background)) == pytest.approx(0.5)
    assert float(background_loss(inside, 1 - background)) == pytest.approx(1 / math.sqrt(2))  # against the inverted mask


def test_thresholds_decay_on_dpls_fifty_step_scale():
    """Step i of N: i_eff = i * 50 / N. With 15 LCM steps the last thresholds are near DPL's last (step 49 of 50)."""
    settings = LearningSettings()
    assert settings.thresholds(0, 15) == (0.3, 0.7, 0.9)
    last = settings.thresholds(14, 15)
    assert last == pytest.approx((0.3 * math.exp(-14 * 50 / 15 / 25), 0.7 * math.exp(-14 * 50 / 15 / 50), 0.9 * math.exp(-14 * 50 / 15 / 25)))
    assert last == pytest.approx((0.046, 0.275, 0.139), abs=1e-3)  # DPL's 50th step: 0.042, 0.263, 0.127
    assert settings.thresholds(25, 50) == settings.thresholds(1, 2)


# --- the mechanisms, through ComfyUI's sampler -------------------------------------------------------------------


def test_the_mask_free_template_takes_batch_jobs_without_masks(tmp_path):
    """The batch command with --workflow edit_dpl_maskfree_sd15: a job without masks fills the graph (no mask preview to
    save); a job with mask files is refused, naming the fix."""
    import json
    from argparse import Namespace

    from pipelines.cli import slots_for
    from pipelines.comfyui import ROOT
    from pipelines.jobs import make_job
    from pipelines.slots import find_slots

    workflow = ROOT / "workflows" / "api" / "edit_dpl_maskfree_sd15.json"
    slots = find_slots(json.loads(workflow.read_text()), workflow.name)
    assert slots.mask_node is None and slots.painted is None and not slots.problems({"seed", "steps"}, True, set())
    (tmp_path / "photo.png").write_bytes(b"")
    (tmp_path / "wolf.png").write_bytes(b"")
    plain, problems = make_job({"image": "photo.png", "edits": "wolf -> goat"}, tmp_path, "row 1", {})
    assert not problems
    graph, previews = slots.fill(plain, {plain.image: "b/photo.png"}, "b/job")
    assert previews == set() and graph["7"]["inputs"]["edits"] == "wolf -> goat" and graph["4"]["inputs"]["image"] == "b/photo.png"
    masked, _ = make_job({"image": "photo.png", "edits": "wolf -> goat", "masks": ["wolf.png"]}, tmp_path, "row 2", {})
    _, problems = slots_for([plain, masked], Namespace(bind=[], workflow=workflow))
    assert problems == ["row 2: gives mask files, but edit_dpl_maskfree_sd15.json edits without masks: leave the masks out"]
