"""What steps and front-ends share about models: ONNX files, tensors and their comparison, calibration data."""
