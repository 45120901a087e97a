"""Test and benchmark scaffolding (a gunicorn runner, a tiny real ONNX model): never shipped in the image."""
