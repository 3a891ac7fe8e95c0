"""What the gateway did to one instance, for a privacy officer to look at (issue 22): the
outcome, the original and de-identified data sets, the rectangles masked, the header diff,
and the images as PNG with the masks outlined.

Used by the officer's console and by `dicom-gateway deidentify --preview`. It sits above the
worker and below the commands; it holds PHI in memory only, and logs none of it.
"""

from gateway.deidentify.pixels.frames import Undecodable
from gateway.deidentify.pixels.stage import Masked
from gateway.review.core import Review, read, review, reviewed
from gateway.review.diff import SHOWN, Change, diff
from gateway.review.pictures import has_pixels, spaced, strip, thumbnail

__all__ = [
    "SHOWN",
    "Change",
    "Masked",
    "Review",
    "Undecodable",
    "diff",
    "has_pixels",
    "read",
    "review",
    "reviewed",
    "spaced",
    "strip",
    "thumbnail",
]
