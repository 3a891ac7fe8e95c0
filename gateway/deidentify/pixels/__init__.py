"""Burned-in text in pixel data: which images need checking, their frames, and (to come) the
detection, masking and re-encoding that make them safe (issue 5)."""
