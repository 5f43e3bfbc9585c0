"""trtbuild: declarative, content-hashed builds of TensorRT engines from YAML recipes.

Importing this package stays light: no torch, tensorflow, tensorrt or onnxruntime.
Heavy libraries are imported inside the steps, in worker processes.
"""

__version__ = "0.1.0"
