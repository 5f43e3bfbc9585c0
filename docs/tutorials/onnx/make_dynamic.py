"""Give squeezenet.onnx a dynamic batch dim (N) on its input and output: squeezenet_dynamic.onnx."""
import onnx

model = onnx.load("squeezenet.onnx")
for value in (*model.graph.input, *model.graph.output):
    if value.name in ("data_0", "softmaxout_1"):
        value.type.tensor_type.shape.dim[0].dim_param = "N"  # was dim_value 1
onnx.save(model, "squeezenet_dynamic.onnx")
