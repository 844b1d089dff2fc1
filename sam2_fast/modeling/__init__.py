"""SAM 2 / 2.1 model modules (weights-compatible with the official checkpoints)."""
