"""Random-weight metric models in the formats users download, written into FOLDER (see harness/metric_model_files.py).

    python3 -m scripts.metric_model_files FOLDER [--dino dino_vitbase8_pretrain]
"""
import argparse
import sys
from pathlib import Path

from harness.metric_model_files import DINO_SHAPES, write_metric_models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dino", default="dino_deitsmall16_pretrain", choices=list(DINO_SHAPES), help="which DINO release file to imitate")
    args = parser.parse_args(argv)
    print(write_metric_models(args.folder, args.dino))
    return 0


if __name__ == "__main__":
    sys.exit(main())
