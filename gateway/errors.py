"""The gateway's exception tree.

Every message here is written for an operator and must never carry PHI: no patient data, no
UIDs and no AE titles read from the wire. Configured names and file paths chosen by the site are
fine.
"""


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


class VaultError(GatewayError):
    """The vault cannot be opened, written or read back."""


class NetworkError(GatewayError):
    """A DICOM peer could not be reached or refused the association (SCU side)."""
