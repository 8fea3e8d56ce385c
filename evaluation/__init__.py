"""ALE-Bench's evaluation, as ALE's own evaluation code computes it (no ComfyUI, nothing of the editing code).

    ale_metrics.py   TELS, TILS, structure distance, editing performance, PSNR/SSIM/LPIPS/MSE of the unedited part
    structure.py     DINO's structure distance
    models.py        the metric models, loaded offline from a folder
    bench.py         ALE-Bench's folder layout: images, masks, prompts, results
    report.py        ALE's CSV, means per object count and edit type, Table 1 beside the paper
    card.py          the Leakage Metrics node's table, as markdown and as a picture
    fonts.py         the font every picture of the pack is drawn with (DejaVu Sans, from matplotlib)
"""
