"""Writes classifier.onnx: a small CNN for 64x64 RGB images (dynamic batch, seeded random weights),
standing in for the ONNX model you exported: Conv-Relu-Conv-Relu-GlobalAveragePool-Gemm."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(0)


def weight(name, *shape):
    return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)


nodes = [
    helper.make_node("Conv", ["image", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1], strides=[2, 2]),
    helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
    helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
    helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
    helper.make_node("GlobalAveragePool", ["r2"], ["pooled"], name="pool"),
    helper.make_node("Flatten", ["pooled"], ["features"], name="flatten"),
    helper.make_node("Gemm", ["features", "w3", "b3"], ["logits"], name="head", transB=1),
]
weights = [weight("w1", 16, 3, 3, 3), weight("b1", 16), weight("w2", 32, 16, 3, 3), weight("b2", 32),
           weight("w3", 10, 32), weight("b3", 10)]
graph = helper.make_graph(nodes, "classifier", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 64, 64])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], weights)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 10  # ONNX Runtime 1.30 reads IR versions up to 13; onnx 1.23 writes 14 by default
onnx.save(model, "classifier.onnx")
