"""Artist pipelines: a batch of edits run on one or many ComfyUI servers (see pipelines/cli.py and the README).

    python3 -m scripts.batch_edit jobs.jsonl --server http://gpu1:8188 --server http://gpu2:8188 --out edits/
"""
import sys

from pipelines.cli import main

if __name__ == "__main__":
    sys.exit(main())
