"""The pack's nodes (ComfyUI's V3 schema), one feature per module."""
from .anchoring import RegionAnchoring
from .attention_masks import MasksFromAttention
from .background_blend import LatentBackgroundBlend, LatentBackgroundPaste
from .dual_branch import DualBranchGuider
from .encode import ObjectRestrictedEncode
from .grounded_sam import ObjectMasksGroundedSAM
from .loaders import GroundingDinoLoader, SAMLoader
from .painted_masks import ObjectMasksPainted
from .prompt_learning import DynamicPromptLearning
from .rebalance import SourceDominanceRebalance
from .region_attention import RegionGuidedCrossAttention

NODES = [
    ObjectRestrictedEncode, ObjectMasksPainted, GroundingDinoLoader, SAMLoader, ObjectMasksGroundedSAM, MasksFromAttention,
    RegionGuidedCrossAttention, SourceDominanceRebalance, RegionAnchoring, DynamicPromptLearning, LatentBackgroundBlend,
    LatentBackgroundPaste, DualBranchGuider,
]
