"""How de-identification fails: one exception with a reason code, one guard that makes it.

pydicom and the image decoders raise many exception types on bad input, and their messages and
warnings may quote values (PHI). `guard()` is the one boundary where such failures become an
`Unprocessable` with a fixed reason code and no message from the data: the instance is then
quarantined, never passed on. Our own outcomes and a failing vault (the site's problem, not the
instance's) go through unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from gateway.errors import Unprocessable, VaultError


@contextmanager
def guard(reason: str) -> Iterator[None]:
    """Turn any unforeseen failure inside into `Unprocessable`; `reason` may end in ":" to be
    completed with the exception's type name (never its message)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except (Unprocessable, VaultError):
            raise
        except Exception as exc:  # noqa: BLE001 - the one boundary; fail closed, no message
            code = f"{reason}{exc.__class__.__name__}" if reason.endswith(":") else reason
            raise Unprocessable(code) from None
