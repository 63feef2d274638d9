"""The GICD network alone, pure torch: backbones, GIM, ARM decoder, loss, checkpoint formats.

No I/O beyond loading weights. Installed as ``streamcosal.model``.
"""


import warnings  # noqa: E402

from .backbones import (
                        BACKBONES,
                        Backbone,
                        EfficientNetLite0Backbone,
                        EfficientNetLite2Backbone,
                        EfficientNetLiteBackbone,
                        VGG16Backbone,
                        WeightsError,
                        build_backbone,
)
from .checkpoint import load_checkpoint, load_official, read_checkpoint, save_checkpoint
from .decoder import ARMDecoder
from .gicd import GICD, GICDOutput
from .gim import class_activation_map, consensus_from_logits, gradient_induced_weights, group_consensus
from .loss import gicd_loss, soft_iou_loss
from .prototype import group_prototypes, object_prototypes, prototype_gate, prototype_similarity

# torch.func.jvp (the head pass) loads torch's own forward-mode decompositions through torch.jit.script on
# first use, which warns that torch.jit.script is deprecated: torch's internals, nothing a user can act on.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning,
                        module=r"torch\.jit\._script")

__all__ = [
    "ARMDecoder", "BACKBONES", "Backbone", "EfficientNetLite0Backbone", "EfficientNetLite2Backbone",
    "EfficientNetLiteBackbone", "GICD", "GICDOutput", "VGG16Backbone",
    "WeightsError", "build_backbone", "class_activation_map", "consensus_from_logits", "gicd_loss", "group_consensus",
    "gradient_induced_weights", "group_prototypes", "load_checkpoint", "load_official", "object_prototypes", "prototype_gate",
    "prototype_similarity",
    "read_checkpoint", "save_checkpoint", "soft_iou_loss",
]
