"""Mask math and the detector/segmenter wrappers (pure torch; no ComfyUI imports)."""
