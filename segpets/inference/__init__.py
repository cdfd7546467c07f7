"""Trained models for new images: a checkpoint, ONNX or TorchScript file loaded with the
preprocessing it stores (model)."""
