"""The pack's nodes (ComfyUI's V3 schema), one feature per module."""
from .anchoring import RegionAnchoring
from .attention_masks import MasksFromAttention
from .attention_preview import AttentionMapPreview, AttentionMapRecorder
from .attention_replacement import AttentionReplacement
from .background_blend import LatentBackgroundBlend, LatentBackgroundPaste
from .dual_branch import DualBranchGuider
from .dual_branch_flux import DualBranchGuiderFlux
from .encode import ObjectRestrictedEncode
from .encode_flux import ObjectRestrictedEncodeFlux
from .grounded_sam import ObjectMasksGroundedSAM
from .joint_attention import RegionGuidedJointAttention
from .leakage_metrics import LeakageMetrics
from .loaders import GroundingDinoLoader, SAMLoader
from .painted_masks import ObjectMasksPainted
from .pixel_composite import PixelBackgroundComposite
from .prompt_learning import DynamicPromptLearning
from .rebalance import SourceDominanceRebalance
from .region_attention import RegionGuidedCrossAttention

NODES = [
    ObjectRestrictedEncode, ObjectMasksPainted, GroundingDinoLoader, SAMLoader, ObjectMasksGroundedSAM, MasksFromAttention,
    RegionGuidedCrossAttention, SourceDominanceRebalance, RegionAnchoring, DynamicPromptLearning, AttentionReplacement,
    LatentBackgroundBlend, LatentBackgroundPaste, PixelBackgroundComposite, DualBranchGuider, AttentionMapRecorder,
    AttentionMapPreview, LeakageMetrics, ObjectRestrictedEncodeFlux, RegionGuidedJointAttention, DualBranchGuiderFlux,
]
