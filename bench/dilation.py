"""Seconds per mask for ALE-Edit's disk dilation at 1024² on the CPU (goal: <= 0.5 s): the pack's exact Euclidean
distance transform against scipy's binary_dilation with ALE-Edit's circular structure (its code) and the square
max-pool the pack used before, on one ALE-Bench mask and on random blobs.

    python3 -m bench.dilation [--size 1024] [--percent 4] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

from harness import comfy_env
from pipelines.comfyui import ROOT


def seconds(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--percent", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    comfy_env.register_pack()

    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from scipy.ndimage import binary_dilation

    from leakfree_edit.masking.ops import dilate, dilation_radius

    bench = ROOT.parent / "shared" / "ale_bench" / "masks" / "artificial_img03" / "wolf_mask.png"
    shipped = ROOT / "example_inputs" / "wolf_mask.png"
    picture = Image.open(bench if bench.exists() else shipped).convert("L").resize((args.size, args.size), Image.NEAREST)
    blobs = torch.rand(args.size // 32, args.size // 32, generator=torch.Generator().manual_seed(0)) > 0.9
    blobs = F.interpolate(blobs[None, None].float(), size=(args.size, args.size))[0]
    radius = dilation_radius(args.size, args.size, args.percent / 100)
    y, x = np.ogrid[-radius: radius + 1, -radius: radius + 1]
    disk = x**2 + y**2 <= radius**2
    print(f"{args.size}² masks, radius {radius} px (int({args.percent / 100} x {args.size})), median of {args.repeats}")
    for name, mask in (("ALE-Bench wolf mask", torch.from_numpy(np.asarray(picture) > 127).float()[None]), ("random blobs", blobs)):
        ours = seconds(lambda: dilate(mask, radius), args.repeats)
        scipy = seconds(lambda: binary_dilation(mask[0].numpy() > 0, structure=disk), 1)
        square = seconds(lambda: F.max_pool2d(mask[None], 2 * radius + 1, stride=1, padding=radius), 1)
        same = np.array_equal(dilate(mask, radius)[0].numpy() > 0, binary_dilation(mask[0].numpy() > 0, structure=disk))
        print(f"{name}: distance transform {ours:.3f} s | scipy binary_dilation (ALE-Edit's code) {scipy:.2f} s "
              f"({scipy / ours:.0f}x) | square max-pool (before) {square:.2f} s | identical to ALE-Edit's: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
