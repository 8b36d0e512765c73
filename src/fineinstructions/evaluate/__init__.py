"""Evaluating pre-trained checkpoints on real human question→answer pairs."""
