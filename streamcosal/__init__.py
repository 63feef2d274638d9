"""streamcosal: co-saliency detection (GICD) for image groups, videos and camera streams.

``from streamcosal import CoSalEngine`` is the predictor; the package's stages are its subpackages
(``io``, ``inference``, ``run``, ``training``, ``evaluation``). Importing the package imports no torch:
the command line answers ``--help`` without it.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING

__version__ = version("streamcosal")
__all__ = ["CoSalEngine", "__version__"]

if TYPE_CHECKING:
    from streamcosal.inference.engine import CoSalEngine


def __getattr__(name: str) -> object:
    if name == "CoSalEngine":
        from streamcosal.inference.engine import CoSalEngine

        return CoSalEngine
    raise AttributeError(f"module 'streamcosal' has no attribute {name!r}")
