"""ONNX export of trained models, with metadata and checks against PyTorch."""
