"""Utilities: image/prompt transforms and input validation."""
