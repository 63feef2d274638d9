"""The embedded checkpoints: which backbones have one, the default, and where they are installed."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from streamcosal.model import WeightsError

PRETRAINED = {"efficientnet_lite2": "gicd_lite2.pt", "efficientnet_lite0": "gicd_lite0.pt"}
"""The embedded checkpoints by backbone; the first is the default (chosen on the validation split:
reports/training/ablation_table.md)."""
DEFAULT_BACKBONE = "efficientnet_lite2"


def default_weights_path(backbone: str = DEFAULT_BACKBONE) -> Path:
    """The embedded checkpoint of ``backbone`` (the default model's by default); clear errors."""
    if backbone not in PRETRAINED:
        raise WeightsError(f"no embedded model for backbone {backbone!r}; embedded: {', '.join(PRETRAINED)}")
    path = Path(str(resources.files("streamcosal") / "weights" / PRETRAINED[backbone]))
    if not path.is_file():
        raise WeightsError(
            f"the embedded model's trained decoder weights ({path}) are not in this installation. "
            f"Train them with `streamcosal train configs/{'lite2_cp' if backbone.endswith('2') else 'lite0'}.toml` "
            "or pass a checkpoint: CoSalEngine.from_checkpoint(PATH)."
        )
    return path
