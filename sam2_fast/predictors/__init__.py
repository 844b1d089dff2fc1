"""Predictors: image (this release), video, stream and automatic mask generation."""
