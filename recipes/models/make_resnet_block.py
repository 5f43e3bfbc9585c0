"""Writes resnet_block.onnx: a ResNet stem and one basic residual block with seeded random weights.

Run from anywhere: python recipes/models/make_resnet_block.py [OUT.onnx]
Needs only numpy and onnx, so the example builds on a machine without any framework.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(classes: int = 10, width: int = 64, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def weight(name, shape, scale=None):
        scale = scale or (2.0 / np.prod(shape[1:])) ** 0.5
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def conv_bn(x, name, cin, cout, k, stride, relu=True):
        w = weight(f"{name}.weight", (cout, cin, k, k))
        nodes.append(helper.make_node("Conv", [x, w], [f"{name}.conv"], name=f"{name}/Conv",
                                      kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4))
        bn = [weight(f"{name}.bn.{p}", (cout,), 0.1) for p in ("scale", "bias", "mean")]
        inits.append(numpy_helper.from_array(rng.uniform(0.5, 1.5, cout).astype(np.float32), f"{name}.bn.var"))
        nodes.append(helper.make_node("BatchNormalization", [f"{name}.conv", *bn, f"{name}.bn.var"], [f"{name}.bn"],
                                      name=f"{name}/BatchNormalization"))
        if not relu:
            return f"{name}.bn"
        nodes.append(helper.make_node("Relu", [f"{name}.bn"], [f"{name}.relu"], name=f"{name}/Relu"))
        return f"{name}.relu"

    x = conv_bn("input", "stem", 3, width, 7, 2)
    nodes.append(helper.make_node("MaxPool", [x], ["pool"], name="stem/MaxPool", kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    y = conv_bn("pool", "block1.a", width, width, 3, 1)
    y = conv_bn(y, "block1.b", width, width, 3, 1, relu=False)
    nodes.append(helper.make_node("Add", ["pool", y], ["block1.sum"], name="block1/Add"))
    nodes.append(helper.make_node("Relu", ["block1.sum"], ["block1.out"], name="block1/Relu"))
    nodes.append(helper.make_node("GlobalAveragePool", ["block1.out"], ["gap"], name="head/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], name="head/Flatten"))
    fc = weight("fc.weight", (classes, width))
    inits.append(numpy_helper.from_array(np.zeros(classes, np.float32), "fc.bias"))
    nodes.append(helper.make_node("Gemm", ["flat", fc, "fc.bias"], ["logits"], name="head/Gemm", transB=1))

    graph = helper.make_graph(
        nodes, "resnet_block",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    # IR 8 / opset 17: readable by every ONNX Runtime and TensorRT release trtbuild supports.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                              producer_name="trtbuild-example")
    onnx.checker.check_model(model, full_check=True)
    return model


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("resnet_block.onnx")
    onnx.save(make_model(), out)
    print(out)
