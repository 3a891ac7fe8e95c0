"""The independent release check (DESIGN 2, promise 3): every outgoing object is re-read
against its original before it is sealed; what is not proven clean is quarantined.

Written apart from the de-identifier on purpose: this package never imports `gateway.deidentify`
(an import-linter contract holds it to that) and takes none of its decisions. It reads the
standard's tables as data and derives its own rules from them and from the site's options
(`allowed`), gathers this patient's identifiers from the original (`identifiers`), and walks the
output once (`check`).
"""

from gateway.release.check import REASONS, Finding, PixelEvidence, ReleaseCheck

__all__ = ["REASONS", "Finding", "PixelEvidence", "ReleaseCheck"]
