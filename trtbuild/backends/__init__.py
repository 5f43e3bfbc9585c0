"""TensorRT backends: targets, the builder adapter, GPUs on this machine."""
