"""streamcosal: co-saliency detection (GICD) for image groups, videos and camera streams."""

__version__ = "0.1.0"
