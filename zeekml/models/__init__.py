"""ONNX scorers, their model cards, and the registry that finds bundled models."""
