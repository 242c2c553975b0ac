"""FPGA variants: int8 quantization of registered ONNX models within an accuracy budget."""
