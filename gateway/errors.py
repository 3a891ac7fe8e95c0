"""The gateway's exception tree: every error it raises on purpose is a `GatewayError`.

    GatewayError
    ├── ConfigError          the configuration cannot be used (every problem, key and file)
    │   (RuleError, VocabularyError: a site's pixel-rule script or word file, as ValueError too)
    ├── KeyFileError         a key file is missing, unreadable, malformed or too open
    ├── ModelError           a text-detector model file is missing or not the tested one
    ├── SpoolError           the spool cannot take or give back an instance
    │   ├── SpoolFull, SpoolLocked, SpoolCorrupt
    ├── TlsSetupError, ListenError, NetworkError
    ├── VaultError           the vault cannot be opened, written or read back
    │   └── VaultUnavailable the vault cannot be reached now: work waits, nothing is held
    ├── SealError            a sealed body does not open under its name
    ├── UnreadableDataset    a received data set cannot be walked to its Study Instance UID
    ├── IncompatibleLibrary  an installed library changed where a seam relies on it
    │   ├── IncompatiblePynetdicom   ingest/pynetdicom_seam.py (ingest, scu.py)
    │   ├── IncompatibleHttpx        forward/httpx_seam.py (the SPKI pin)
    │   └── IncompatibleUvicorn      receiver/uvicorn_seam.py (the reference receiver)
    └── Unprocessable        an instance cannot be de-identified safely: a reason code
        └── Undecodable      (pixels/frames.py) its pixel data cannot be decoded

Every message here is written for an operator and must never carry PHI: no patient data, no
UIDs and no AE titles read from the wire. Configured names and file paths chosen by the site are
fine. Not in the tree on purpose: `PduTooLarge` (ingest/transport.py) is an OSError, so the
socket layer treats it as the broken connection it ends in; the reference receiver's
`Refused` is an HTTP answer, not an error of the gateway.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration cannot be used; `problems` lists every reason, each naming key and file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class KeyFileError(GatewayError):
    """A key file is missing, unreadable, malformed or readable by others."""


class SpoolError(GatewayError):
    """The spool cannot take or give back an instance."""


class SpoolFull(SpoolError):
    """Free space is below the configured reserve, or the disk reported it is full."""


class SpoolLocked(SpoolError):
    """Another gateway process already owns this spool directory."""


class SpoolCorrupt(SpoolError):
    """A spool file or study key does not authenticate: it was altered or the key is wrong."""


class TlsSetupError(GatewayError):
    """Certificates or keys named in the configuration cannot be loaded."""


class ListenError(GatewayError):
    """A configured address and port cannot be bound (in use, not ours, no permission)."""

    @classmethod
    def binding(cls, exc: OSError, key: str, host: str, port: int) -> ListenError:
        """The error for a failed bind, naming the address, the port and the setting to change:
        `cannot listen on 127.0.0.1:11112 (ingest.port): address already in use`."""
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        why = exc.strerror or exc.__class__.__name__
        return cls(f"cannot listen on {address} ({key}): {why[:1].lower()}{why[1:]}")


class VaultError(GatewayError):
    """The vault cannot be opened, written or read back."""


class VaultUnavailable(VaultError):
    """The vault cannot be used now (its file failing, its server down, restarting or
    refusing the login or TLS, made with another vault.key, its schema newer than this gateway
    knows): instances wait in the spool until it can; `reason` is a code for logs, metrics and
    readiness (`gateway.fate.VAULT_REASONS`)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NetworkError(GatewayError):
    """A DICOM peer could not be reached or refused the association (SCU side)."""


class RuleError(GatewayError, ValueError):
    """A pixel-rule script that cannot be read, as `file:line:column: what` (scripts hold no
    PHI)."""

    def __init__(self, name: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{name}:{line}:{column}: {message}")
        self.name, self.line, self.column, self.message = name, line, column, message


class VocabularyError(GatewayError, ValueError):
    """A site word file that cannot be used; the message names the line (it holds no PHI)."""


class ModelError(GatewayError):
    """A model file is missing, altered or not loadable; the message names the file."""


class SealError(GatewayError):
    """A body does not open under the name it came with (wrong key, name or bytes)."""


class UnreadableDataset(GatewayError):
    """The data set could not be walked as far as Study Instance UID."""


class Unprocessable(GatewayError):
    """The instance cannot be de-identified safely; `reason` is a fixed code, never data."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class IncompatibleLibrary(GatewayError):
    """An installed library no longer does what one of the gateway's seams relies on; the
    message names each reliance, the installed and the checked versions."""


class IncompatiblePynetdicom(IncompatibleLibrary):
    """The installed pynetdicom lacks an internal the ingest or the SCU relies on, or it changed
    shape (`ingest/pynetdicom_seam.py`)."""


class IncompatibleHttpx(IncompatibleLibrary):
    """httpx or httpcore no longer opens TLS connections the way the SPKI pin relies on
    (`forward/httpx_seam.py`)."""


class IncompatibleUvicorn(IncompatibleLibrary):
    """uvicorn or asyncio no longer serves the way the reference receiver relies on
    (`receiver/uvicorn_seam.py`)."""
