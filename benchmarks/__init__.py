"""Benchmarks stage: transfer fine-tuning and speed benchmarks."""
