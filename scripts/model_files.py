"""Random-weight model files in the real formats, written into a models folder (see harness/model_files.py).

    python3 -m scripts.model_files MODELS_DIR [--only checkpoints loras ...]
"""
import argparse
import sys
from pathlib import Path

from harness.model_files import FILES, PEER_FILES, write_model_files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models_dir", type=Path, help="ComfyUI's models/ folder (or a base folder's)")
    parser.add_argument("--only", nargs="+", choices=[*FILES, *PEER_FILES], help="write only these files (the peer packs' files only so)")
    args = parser.parse_args(argv)
    write_model_files(args.models_dir, args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())
