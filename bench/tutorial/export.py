"""Tutorial pipeline, step 1 of 3: torchvision ResNet-50 (random weights) -> ONNX, dynamic batch.

    python export.py resnet50.onnx
"""
import sys

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet50(weights=None).eval()
with torch.no_grad():
    torch.onnx.export(model, (torch.randn(8, 3, 224, 224),), sys.argv[1], opset_version=17, dynamo=False,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}})
