"""Attention math, pure torch (no ComfyUI, nothing of integration/ or nodes/; it may use masking/).

    plan.py, tokens.py      the edit plan (edit lines, objects, families) and its token windows and spans
    ore.py                  Object-Restricted Encoding: the N+2 windows assembled into ORE embeddings
    region_attention.py     the region attention program: cross-attention terms (RGB-CAM), rows, schedules, observers
    self_attention.py       self-attention terms: region binding columns, the dual branch's Q/K lock, row layout
    rebalance.py            source-dominance rebalancing (cross-attention boosts, sink scaling)
    anchoring.py            region anchoring (ELA-style loss and the latent step)
    dual_branch.py          DDCM virtual inversion and its schedules
    joint_attention.py      Flux: the joint-attention routing program and its bias
    localisation.py         what is read off attention: softmax probabilities, each object's span attention, the
                            capture of Masks from Attention and its object scores
    clustering.py           DPL's background from clustered self-attention
    attention_maps.py       the recorded maps of the Attention Map Preview and their leak
    prompt_learning.py      DPL's losses, thresholds and learning loop
"""
