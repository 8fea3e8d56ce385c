"""Test-only custom node file, linked into the test server's custom_nodes: random-weight models produce denormal
floats, which the CPU computes about 10x slower. Flushing them here, at load time, reaches the prompt worker
thread, which ComfyUI starts after loading custom nodes (a new thread inherits the floating-point environment)."""
import torch

torch.set_flush_denormal(True)
NODE_CLASS_MAPPINGS = {}
