"""vltk: masked generative vision-language transformers (MAGVLT, ARGVLT, GIVT), end to end.

    import vltk
    gen = vltk.load("build/demo/gen")          # any artifact by path (see vltk.api)
    images = gen.text_to_image(["a small red circle"], seed=0)
"""

import importlib
from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "api", "load"]


def __getattr__(name: str) -> Any:
    # The API is imported on first use, so that `import vltk` (the CLI's start, `vltk --version`) does not load torch.
    if name in ("api", "load"):
        api = importlib.import_module("vltk.api")
        return api if name == "api" else api.load
    raise AttributeError(f"module 'vltk' has no attribute {name!r}")
