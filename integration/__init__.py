"""The pack's one home for ComfyUI-facing code: patch installation and block walking, the dual-branch guider,
attention capture, model folders and loading, shared node checks and the custom socket types.

``nodes/`` declares nodes and maps their inputs to calls of this package; ``attention/`` and ``masking/`` hold
the math and never import ComfyUI.
"""
