"""Attention math: ORE assembly and the region attention program (pure torch; no ComfyUI imports)."""
