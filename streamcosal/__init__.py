"""streamcosal: co-saliency detection (GICD) for image groups, videos and camera streams."""

__version__ = "0.1.0"

from .engine import CoSalEngine  # noqa: E402

__all__ = ["CoSalEngine", "__version__"]
