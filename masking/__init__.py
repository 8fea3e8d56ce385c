"""Masks, pure torch (no ComfyUI, nothing of attention/, integration/ or nodes/).

    ops.py                  binarise, dilate, resize to a layer, overlaps, background, the UNet's level grids, feathering
    token_grid.py           masks on Flux's patch grid
    disjoint.py             disjoint regions from scores (Otsu, best claimant, disjoint dilation)
    quality.py              the silent cases a mask set can hide (empty, tiny, overlapping, another aspect ratio)
    composite.py            the pixel background composite and its feather
    preview.py              labelled mask previews, attention heat panels
    checkpoints.py, bert.py, grounding_dino.py, sam.py, grounded_sam.py   Grounding-DINO and SAM, loaded offline
"""
