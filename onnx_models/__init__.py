"""Bundled ONNX models with their model cards (installed as ``zeekml.onnx_models``)."""
