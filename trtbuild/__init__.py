"""trtbuild: declarative, content-hashed builds of TensorRT engines from YAML recipes.

Importing this package stays light: no torch, tensorflow, tensorrt or onnxruntime.
Heavy libraries are imported inside the steps, in worker processes.
"""

__version__ = "0.1.0"

import os as _os

# ONNX Runtime's telemetry (on by default on Linux) writes /tmp/mat-debug-<pid>.log and files under
# ~/.cache/Microsoft from every process that imports it: off for the runner and every worker it starts.
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
