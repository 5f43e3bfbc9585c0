"""Tutorial pipeline, step 2 of 3: onnx-simplifier with its defaults (no ONNX Runtime check).

    python simplify.py resnet50.onnx resnet50-sim.onnx
"""
import sys

import onnx
from onnxsim import simplify

model, ok = simplify(onnx.load(sys.argv[1]))
assert ok, "simplified ONNX model could not be validated"
onnx.save(model, sys.argv[2])
