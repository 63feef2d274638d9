"""streamcosal: co-saliency detection (GICD) for image groups, videos and camera streams.

``from streamcosal import CoSalEngine`` is the predictor; the package's stages are its subpackages
(``io``, ``inference``, ``run``, ``training``, ``evaluation``). Importing the package imports no torch:
the command line answers ``--help`` without it.
"""

from __future__ import annotations

import os
from importlib.metadata import version
from typing import TYPE_CHECKING

__version__ = version("streamcosal")
__all__ = ["CoSalEngine", "__version__"]

# In a checkout, streamcosal.model, .storage and .flows live beside this folder (pyproject's package-dir);
# an installed copy holds them inside it. A checkout imported ahead of an installed copy (run from the
# repository's root: pytest's pythonpath ".", `python -c`, a benchmark that puts the root first, with the
# project installed by `pip install --target`, as benchmarks/gpu.sh does) finds them there too.
_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if not os.path.isdir(os.path.join(__path__[0], "model")) and os.path.isfile(os.path.join(_root, "model", "__init__.py")):
    __path__.append(_root)

if TYPE_CHECKING:
    from streamcosal.inference.engine import CoSalEngine


def __getattr__(name: str) -> object:
    if name == "CoSalEngine":
        from streamcosal.inference.engine import CoSalEngine

        return CoSalEngine
    raise AttributeError(f"module 'streamcosal' has no attribute {name!r}")
