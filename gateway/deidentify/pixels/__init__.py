"""Burned-in text in pixel data: which images need checking, their frames, and the detection,
masking and re-encoding that make them safe."""
