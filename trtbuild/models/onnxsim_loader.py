"""onnx-simplifier, imported without torch.

onnxsim imports torch (3 s) only for an optional PPQ bridge that trtbuild never uses, so torch is
blocked for the import only: the same process may later run a step that does need torch. A spare
worker imports this module while the steps before simplify run (the simplify step's IMPORTS).
"""

from __future__ import annotations

import sys

_blocked = "torch" not in sys.modules
if _blocked:
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` raises ImportError
try:
    import onnxsim  # noqa: F401  (re-exported)
finally:
    if _blocked:
        del sys.modules["torch"]
