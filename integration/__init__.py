"""The pack's one home for ComfyUI-facing code; ``nodes/`` declares nodes and maps their inputs to calls of this
package, ``attention/``, ``masking/`` and ``evaluation/`` hold the math and never import ComfyUI.

    patching.py        block walking, the region attention program installed on a clone, percent -> sigma
    guider.py          the Dual-Branch Edit Guider (a CFGGuider) and its rows
    capture.py         the capture run of Masks from Attention
    prompt_learning.py DPL's learning passes inside the sampler (gradients, lent weights, the cache)
    flux.py            Flux: encoding the edit plan, region-guided joint attention on a clone
    encoding.py        the SD edit plan through ComfyUI's CLIP
    object_masks.py    the mask nodes' shared path (binarise, dilate, overlaps, warnings, preview)
    detection.py       Grounding-DINO and SAM files from the model folders, cached
    metrics.py         the metric models from models/leakage_metrics
    checks.py          input checks with the node's name and the fix (the mask-set check among them), model kinds,
                       the ORE payload
    sockets.py         the custom socket types and shared widgets
    errors.py          NodeInputError, the error the nodes raise
"""
