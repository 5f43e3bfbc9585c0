"""Tutorial pipeline, step 1 of 3: torchvision ResNet-50 (random weights) -> ONNX, dynamic batch.

    python export.py resnet50.onnx [--opset 17]

With --opset (below 18): the TorchScript-based exporter, as tutorials for older opsets do. Without:
torch.onnx.export's defaults (the torch.export-based exporter and its default opset).
"""
import sys

import torch
import torchvision

torch.manual_seed(0)
model = torchvision.models.resnet50(weights=None).eval()
example = (torch.randn(8, 3, 224, 224),)
with torch.no_grad():
    if "--opset" in sys.argv:
        torch.onnx.export(model, example, sys.argv[1], opset_version=int(sys.argv[sys.argv.index("--opset") + 1]),
                          dynamo=False, input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}})
    else:
        torch.onnx.export(model, example, sys.argv[1], input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=32)},))
