"""Sealing: every de-identified instance (and every study manifest) is encrypted with HPKE to
the analysis server's public key, bound to its name (docs/protocol.md)."""
