"""Grounding-DINO and SAM loaders: the user's own checkpoints from models/grounding-dino and models/sams."""
from ..integration.detection import DINO_FOLDER, SAM_FOLDER, ModelLoaderNode
from ..integration.sockets import GroundingDino, Sam


class GroundingDinoLoader(ModelLoaderNode):
    NODE_ID, DISPLAY_NAME, FOLDER, KIND, SOCKET = "LeakFreeGroundingDinoLoader", "Grounding-DINO Loader (LeakFree)", DINO_FOLDER, "detector", GroundingDino
    DESCRIPTION_TEXT = ("Loads a Grounding-DINO detector (Swin-T or Swin-B .pth, or a transformers-format folder) from models/grounding-dino; "
                        "its tokenizer vocabulary comes from models/bert-base-uncased. Nothing is downloaded.")


class SAMLoader(ModelLoaderNode):
    NODE_ID, DISPLAY_NAME, FOLDER, KIND, SOCKET = "LeakFreeSAMLoader", "SAM Loader (LeakFree)", SAM_FOLDER, "segmenter", Sam
    DESCRIPTION_TEXT = ("Loads a Segment Anything model (vit_b, vit_l or vit_h .pth, or a transformers-format SamModel folder) from "
                        "models/sams; weights are read without running pickled code.")
