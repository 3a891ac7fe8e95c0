"""One TOML file -> frozen, validated settings.

`load()` reads the file and builds the settings; it has no other side effect (no directories
made, no keys read, no sockets opened). Every problem found is collected, each naming the key and
the file, so an operator fixes a file in one pass instead of one error per start.

Relative paths are resolved against the directory of the configuration file, so a config
works the same whatever directory the gateway is started from.

Secrets never appear inline: a secret is `{ file = "path" }` or `{ env = "VARIABLE" }`.

(Over 400 lines on purpose: every configuration key with its default, type and check in
one schema, so `check-config`, the daemon and the docs name keys the same way.)
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import ipaddress
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Check = Callable[[Any], str | None]

DEFAULT_MAX_PDU = 262_144
PRE_ASSOCIATION_MAX_PDU = 65_536


def _check(fn: Check) -> Any:
    """Attach a value check to a dataclass field; the check returns a problem or None."""
    return {"check": fn}


def ae_title_problem(value: str) -> str | None:
    """PS3.5 6.2 (VR AE): 1-16 characters of the default repertoire, no backslash or controls."""
    stripped = value.strip(" ")
    if not stripped:
        return "must not be empty"
    if len(value) > 16:
        return f"must be at most 16 characters (has {len(value)})"
    if any(ch == "\\" or not (0x20 <= ord(ch) < 0x7F) for ch in value):
        return "may hold only printable ASCII characters and no backslash"
    return None


def _port_problem(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port between 0 and 65535"


def _host_problem(value: str) -> str | None:
    ok = value and not any(ch.isspace() or ch in "'\\=" for ch in value)
    return None if ok else "must be a host name, an IP address or a Unix socket folder"


def _loopback(host: str) -> bool:
    """A loopback address, "localhost", or a Unix socket folder (an absolute path)."""
    if host == "localhost" or host.startswith("/"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _positive(value: float) -> str | None:
    return None if math.isfinite(value) and value > 0 else "must be a finite number above zero"


def _non_negative(value: float) -> str | None:
    return None if value >= 0 else "must be zero or more"


def _between(low: int, high: int) -> Check:
    def problem(value: int) -> str | None:
        return None if low <= value <= high else f"must be between {low} and {high}"

    return problem


def _at_least(low: float) -> Check:
    def problem(value: float) -> str | None:
        return None if math.isfinite(value) and value >= low else f"must be at least {low:g}"

    return problem


def _name_problem(value: str) -> str | None:
    ok = (
        value
        and all((ch.isascii() and ch.isalnum()) or ch in "-_." for ch in value)
        and value[0].isalnum()
        and len(value) <= 64
    )
    return (
        None
        if ok
        else "must be 1-64 ASCII letters, digits, '-', '_' or '.', from a letter or digit"
    )


def _code_problem(value: str) -> str | None:
    """Reason codes reach metrics labels and the audit trail: lower case, digits, '-', '.'."""
    ok = re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", value, re.ASCII)
    return None if ok else "must be 1-64 lower-case letters, digits, '-', '_' or '.'"


@dataclass(frozen=True)
class SecretSource:
    """Where a secret lives: a file (mode 0600) or an environment variable, never inline."""

    file: Path | None = None
    env: str | None = None

    def describe(self) -> str:
        return f"file {self.file}" if self.file is not None else f"environment variable {self.env}"


@dataclass(frozen=True)
class PeerSettings:
    """A node allowed to send (PS3.8 calling AE title), optionally pinned to addresses."""

    name: str = field(metadata=_check(_name_problem))
    ae_title: str = field(metadata=_check(ae_title_problem))
    addresses: tuple[IPNetwork, ...] = ()

    def allows_address(self, address: str) -> bool:
        """True when no addresses are configured or `address` falls in one of them."""
        if not self.addresses:
            return True
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.addresses)


@dataclass(frozen=True)
class TlsSettings:
    """Inbound DICOM TLS (PS3.15 B.12/B.13 compatible): server certificate, client CA."""

    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    client_ca: Path | None = None
    handshake_timeout: float = field(default=5.0, metadata=_check(_positive))


@dataclass(frozen=True)
class IngestSettings:
    """The C-STORE SCP: who we are, who may call, and how much we take at once."""

    ae_title: str = field(default="DICOM_GATEWAY", metadata=_check(ae_title_problem))
    host: str = "127.0.0.1"
    port: int = field(default=11112, metadata=_check(_port_problem))
    max_pdu_size: int = field(
        default=DEFAULT_MAX_PDU, metadata=_check(_between(4096, 16 * 1024 * 1024))
    )
    max_instance_mib: int = field(default=4096, metadata=_check(_between(1, 1 << 20)))
    max_associations: int = field(default=8, metadata=_check(_between(1, 1000)))
    max_pending_connections: int = field(default=32, metadata=_check(_between(1, 1000)))
    #: the listening socket's queue of connections the kernel completed and we have not yet
    #: accepted (listen(2) backlog; the kernel caps it at net.core.somaxconn)
    listen_backlog: int = field(default=128, metadata=_check(_between(1, 65535)))
    association_request_timeout: float = field(default=10.0, metadata=_check(_positive))
    network_timeout: float = field(default=60.0, metadata=_check(_positive))
    drain_seconds: float = field(default=30.0, metadata=_check(_positive))
    peers: tuple[PeerSettings, ...] = ()
    tls: TlsSettings = TlsSettings()

    def peer_for(self, calling_ae_title: str) -> PeerSettings | None:
        """The configured peer whose AE title matches; trailing spaces are not significant."""
        wanted = calling_ae_title.strip(" ")
        return next((p for p in self.peers if p.ae_title.strip(" ") == wanted), None)


@dataclass(frozen=True)
class SpoolSettings:
    """Where acknowledged instances wait, encrypted, and how much disk must stay free."""

    directory: Path
    master_key: SecretSource
    min_free_mib: int = field(default=1024, metadata=_check(_between(0, 1 << 30)))

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mib * 1024 * 1024


@dataclass(frozen=True)
class PostgresSettings:
    """A PostgreSQL vault shared by several gateways (`vault.engine = "postgresql"`). The
    password is never inline; with `sslmode` verify-full (the default) the server's certificate
    must chain to `ca` and name `host`; `certificate` and `private_key` authenticate this
    gateway to it."""

    host: str = field(metadata=_check(_host_problem))
    port: int = field(default=5432, metadata=_check(_port_problem))
    dbname: str = "dicom_gateway"
    user: str = "dicom_gateway"
    password: SecretSource | None = None
    sslmode: Literal["disable", "require", "verify-ca", "verify-full"] = "verify-full"
    ca: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    #: connections per gateway process at most (each worker is one process)
    pool_size: int = field(default=2, metadata=_check(_between(1, 64)))
    #: how long one attempt to reach the server may take before the instance waits
    connect_timeout: float = field(default=5.0, metadata=_check(_positive))


@dataclass(frozen=True)
class VaultSettings:
    """The on-site pseudonym store; its key encrypts the original values. `engine` "sqlite"
    (one gateway: a file at `path`) or "postgresql" (shared by N gateways: `[vault.postgresql]`).
    """

    key: SecretSource
    engine: Literal["sqlite", "postgresql"] = "sqlite"
    path: Path | None = None
    postgresql: PostgresSettings | None = None


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus endpoint; loopback by default (DESIGN promise 6)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = field(default=9108, metadata=_check(_port_problem))
    #: connections held at once; one more closes the one waiting longest for its request
    max_connections: int = field(default=64, metadata=_check(_between(1, 10000)))
    #: seconds from connect for the request line and headers, and to take the answer
    request_timeout: float = field(default=5.0, metadata=_check(_positive))


def _site_code_problem(value: str) -> str | None:
    ok = 1 <= len(value) <= 8 and all(
        ch.isascii() and (ch.isupper() or ch.isdigit()) for ch in value
    )
    return None if ok else "must be 1-8 capital letters or digits"


def _uid_root_problem(value: str) -> str | None:
    """PS3.5 9.1: digits and dots, no empty component, no leading zero; room left for 20+ digits."""
    parts = value.split(".")
    if not value or any(not p.isdigit() or (len(p) > 1 and p[0] == "0") for p in parts):
        return "must be a UID root: numbers separated by dots, no leading zeros (e.g. 1.2.3.4)"
    if len(value) > 40:
        return "must be at most 40 characters, to leave room for random digits"
    return None


@dataclass(frozen=True)
class DeidentifySettings:
    """PS3.15 Annex E options (the option columns of Table E.1-1); defaults suit AI analysis:
    patient characteristics kept, dates shifted per patient, descriptors cleaned, rest off."""

    #: Prefix of every patient pseudonym (site code + random code): tells sites apart.
    site_code: str = field(default="SITE", metadata=_check(_site_code_problem))
    #: Root for new UIDs; none: 2.25.<random 128-bit integer> (PS3.5 B.2).
    uid_root: str | None = field(default=None, metadata=_check(_uid_root_problem))
    retain_patient_characteristics: bool = True
    #: Retain Longitudinal Temporal Information: "modified" (shifted per patient), "year"
    #: (year only: strict HIPAA Safe Harbor), "full" (unchanged), or "off" (profile actions).
    longitudinal_dates: Literal["modified", "year", "full", "off"] = "modified"
    retain_device_identity: bool = False
    retain_institution_identity: bool = False
    retain_uids: bool = False
    retain_safe_private: bool = False
    clean_descriptors: bool = True
    clean_structured_content: bool = False
    clean_graphics: bool = False
    #: Free-narrative attributes (comments, histories, reasons, occupation: the list in
    #: docs/deidentify.md) are removed; keywords listed here are kept, cleaned by allow-list.
    keep_cleaned: tuple[str, ...] = ()
    #: The site's own words for the allow-list of free text: one word per line, `#` comments.
    vocabulary: Path | None = None


@dataclass(frozen=True)
class PolicyRule:
    """One site rule: instances matching every non-empty list get `action`; first match wins."""

    action: Literal["process", "drop"]
    reason: str = field(default="site-rule", metadata=_check(_code_problem))
    sop_classes: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    #: Names of configured peers ([[ingest.peers]] name), never AE titles from the wire.
    peers: tuple[str, ...] = ()
    #: Body Part Examined values (case-insensitive), e.g. ["CHEST"].
    body_parts: tuple[str, ...] = ()
    #: Series Description shell patterns (case-insensitive), e.g. ["*LUNG*", "*THORAX*"].
    series_descriptions: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicySettings:
    """Which instances are de-identified and which are dropped, before any de-identification.

    Site rules come first; then the built-in rules drop what the profile cannot clean
    (encapsulated documents, SR unless Clean Structured Content is on, raw data, private SOP
    classes, visible-light photographs)."""

    rules: tuple[PolicyRule, ...] = ()


#: Screening categories a site may leave unchecked (docs/pixels.md); all others are always
#: checked: the burned-in flag, ultrasound, secondary capture, derived, colour, projection and
#: photographic images.
SKIPPABLE_CHECKS = ("cross-sectional", "other-image")


def _markers_problem(value: tuple[str, ...]) -> str | None:
    for marker in value:
        if not 1 <= len(marker) <= 4 or not marker.isascii() or not marker.isalnum():
            return f"markers are 1-4 ASCII letters or digits, not {marker!r}"
    return None


def _skip_problem(value: tuple[str, ...]) -> str | None:
    for name in value:
        if name not in SKIPPABLE_CHECKS:
            return f"only {', '.join(map(repr, SKIPPABLE_CHECKS))} may be skipped, not {name!r}"
    return None


@dataclass(frozen=True)
class PixelSettings:
    """Burned-in text in pixel data: found, masked, or the instance quarantined."""

    #: Screening categories not checked (only "cross-sectional" and "other-image" may be).
    skip: tuple[str, ...] = field(default=(), metadata=_check(_skip_problem))
    #: CTP DicomPixelAnonymizer scripts: header signatures -> rectangles always masked.
    ctp_scripts: tuple[Path, ...] = ()
    #: Ultrasound: mask everything outside a sane Sequence of Ultrasound Regions.
    ultrasound_regions: bool = True
    #: Detected text read as exactly one of these (case-insensitive) stays: orientation marks.
    keep_markers: tuple[str, ...] = field(
        default=("L", "R", "A", "P", "H", "F", "S", "I", "LT", "RT", "AP", "PA", "LAT"),
        metadata=_check(_markers_problem),
    )
    #: Pixels added on every side of a detected text box before it is masked.
    margin: int = field(default=4, metadata=_check(_between(0, 64)))
    #: Seconds one instance's pixel check may take; beyond: quarantined (pixel-check-timeout).
    max_seconds: float = field(default=300.0, metadata=_check(_positive))


def _pin_problem(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        digest = base64.b64decode(value, validate=True)
    except binascii.Error:
        digest = b""
    return None if len(digest) == 32 else "must be a base64 SHA-256 digest (44 characters)"


def _https_problem(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("https://") or "?" in value or "#" in value:
        return "must be an https:// URL without query or fragment"
    try:
        split = urlsplit(value)
        split.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return "must be an https:// URL with a valid host and port"
    if not split.hostname:
        return "must be an https:// URL with a host"
    return None


@dataclass(frozen=True)
class ForwardSettings:
    """Where sealed instances go: the analysis server, protocol v1 (docs/protocol.md), over
    mutual TLS; the server is verified against `ca_bundle` only."""

    enabled: bool = False
    #: Base URL of the analysis server; /v1/studies/... is appended.
    url: str | None = field(default=None, metadata=_check(_https_problem))
    ca_bundle: Path | None = None
    client_certificate: Path | None = None
    client_key: Path | None = None
    #: The analysis server's HPKE public key file (`dicom-gateway keys` makes a dev pair).
    receiver_key: Path | None = None
    #: Optional: base64 SHA-256 of the server certificate's SubjectPublicKeyInfo.
    spki_pin: str | None = field(default=None, metadata=_check(_pin_problem))
    connect_timeout: float = field(default=10.0, metadata=_check(_positive))
    timeout: float = field(default=60.0, metadata=_check(_positive))
    #: How long a transient failure is retried before the instance is dead-lettered (>= 24 h).
    retry_hours: float = field(default=72.0, metadata=_check(_at_least(24.0)))
    max_backoff_seconds: float = field(default=300.0, metadata=_check(_positive))
    #: Requests in flight at once (HTTP/1.1 keep-alive connections).
    connections: int = field(default=2, metadata=_check(_between(1, 32)))


@dataclass(frozen=True)
class PacsSettings:
    """Where re-identified results are stored: the hospital's PACS, by C-STORE."""

    ae_title: str = field(metadata=_check(ae_title_problem))
    host: str = field(metadata=_check(_host_problem))
    port: int = field(default=104, metadata=_check(_port_problem))
    #: The gateway's AE title as PACS knows it (the calling AE title).
    calling_ae_title: str = field(default="DICOM_GATEWAY", metadata=_check(ae_title_problem))
    #: DICOM TLS: PACS is verified against this CA (TLS is on when it is set), and these
    #: authenticate the gateway to PACS.
    tls_ca: Path | None = None
    tls_certificate: Path | None = None
    tls_key: Path | None = None


@dataclass(frozen=True)
class ResultsSettings:
    """The way back: results of the analysis server, fetched over the results channel
    (docs/protocol.md), re-identified from the vault and stored in PACS."""

    enabled: bool = False
    #: How often the analysis server is asked for results.
    poll_seconds: float = field(default=30.0, metadata=_check(_positive))
    #: The gateway's results HPKE key pair: results are sealed to the public half, which the
    #: site gives the analysis vendor (`dicom-gateway keys` makes the pair).
    private_key: Path | None = None
    public_key: Path | None = None
    pacs: PacsSettings | None = None
    #: How long PACS failures are retried before a result is dead-lettered.
    retry_hours: float = field(default=72.0, metadata=_check(_positive))
    #: A result that references images of its study the study ledger does not list yet (made
    #: before the study was stable and its manifest sent) waits this long for them before it
    #: is quarantined (result-reference-outside-study).
    ledger_wait_seconds: float = field(default=900.0, metadata=_check(_positive))
    max_backoff_seconds: float = field(default=300.0, metadata=_check(_positive))


@dataclass(frozen=True)
class WorkerSettings:
    """The process pool that filters, de-identifies, checks and seals each instance."""

    #: Worker processes; 0 = one per CPU core.
    count: int = field(default=0, metadata=_check(_between(0, 64)))
    #: A worker still busy with one instance after this long is killed and the instance
    #: quarantined (worker-timeout).
    instance_timeout_seconds: float = field(default=900.0, metadata=_check(_positive))
    #: Address-space limit of each worker (MiB); an instance that needs more is quarantined.
    max_memory_mib: int = field(default=8192, metadata=_check(_between(512, 1 << 20)))


@dataclass(frozen=True)
class StudySettings:
    """Study assembly: when a study counts as complete and its manifest is sent."""

    #: A study is stable after this many seconds without a new instance.
    stable_seconds: float = field(default=60.0, metadata=_check(_positive))


@dataclass(frozen=True)
class RetentionSettings:
    """How long anything stays on site (the receivers' policies promise 3 days)."""

    #: Sealed copies are kept this long after delivery (support window), then erased.
    delivered_hours: float = field(default=72.0, metadata=_check(_non_negative))
    #: Quarantined originals are erased this long after they were received.
    quarantine_hours: float = field(default=72.0, metadata=_check(_non_negative))
    #: Dead letters (refused by the server) are erased this long after they were sealed.
    dead_letter_hours: float = field(default=72.0, metadata=_check(_non_negative))
    #: How often the retention sweep runs.
    sweep_seconds: float = field(default=60.0, metadata=_check(_positive))


@dataclass(frozen=True)
class AuditSettings:
    """The append-only, hash-chained audit trail (no PHI)."""

    #: Default: audit.log in the spool directory.
    path: Path | None = None


@dataclass(frozen=True)
class ReceiverSettings:
    """The reference receiver (`dicom-gateway receiver`): the analysis server's end of
    protocol v1, for integrators and tests. Clients must present a certificate from
    `client_ca`."""

    host: str = "127.0.0.1"
    port: int = field(default=8443, metadata=_check(_port_problem))
    certificate: Path | None = None
    private_key: Path | None = None
    client_ca: Path | None = None
    #: The receiver's HPKE private key file (mode 0600).
    hpke_private_key: Path | None = None
    #: Where opened instances and manifests are stored; results offered to the gateway wait
    #: in <storage>/<site>/results/.
    storage: Path | None = None
    #: The gateway's public HPKE key: results are sealed to it (the results channel is off
    #: without it).
    results_key: Path | None = None
    #: Analyse every complete study stored and offer a SEG and an SR of it as results (a
    #: demonstration of the way back, gateway/receiver/demo.py); needs `results_key`.
    demo_analysis: bool = False


@dataclass(frozen=True)
class ConsoleSettings:
    """The privacy officer's console (`dicom-gateway console run`, docs/console.md): HTTPS,
    on loopback by default; officers sign in with a name and password (`console officer
    add`), and with `client_ca` must also present a client certificate it issued."""

    host: str = "127.0.0.1"
    port: int = field(default=8444, metadata=_check(_port_problem))
    certificate: Path | None = None
    private_key: Path | None = None
    #: Officers' names and password hashes (scrypt; written by `console officer add`).
    officers: Path | None = None
    #: When set, the TLS handshake also requires a client certificate from this CA.
    client_ca: Path | None = None
    #: A session ends after this long without a request, and after `session_max_hours`.
    session_idle_minutes: float = field(default=15.0, metadata=_check(_positive))
    session_max_hours: float = field(default=8.0, metadata=_check(_positive))


@dataclass(frozen=True)
class LoggingSettings:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


@dataclass(frozen=True)
class Settings:
    spool: SpoolSettings
    vault: VaultSettings
    ingest: IngestSettings = IngestSettings()
    metrics: MetricsSettings = MetricsSettings()
    deidentify: DeidentifySettings = DeidentifySettings()
    policy: PolicySettings = PolicySettings()
    pixels: PixelSettings = PixelSettings()
    forward: ForwardSettings = ForwardSettings()
    results: ResultsSettings = ResultsSettings()
    receiver: ReceiverSettings = ReceiverSettings()
    console: ConsoleSettings = ConsoleSettings()
    workers: WorkerSettings = WorkerSettings()
    studies: StudySettings = StudySettings()
    retention: RetentionSettings = RetentionSettings()
    audit: AuditSettings = AuditSettings()
    logging: LoggingSettings = LoggingSettings()
    source: Path = field(default=Path("."), metadata={"internal": True})

    @property
    def audit_path(self) -> Path:
        return self.audit.path or self.spool.directory / "audit.log"


# ---------------------------------------------------------------------------------------------
# Building typed values from TOML, collecting every problem.


class _Builder:
    def __init__(self, source: Path) -> None:
        self.source = source
        self.problems: list[str] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{self.source}: {key}: {message}")

    def build(self, cls: type[Any], raw: Any, key: str) -> Any:
        if not isinstance(raw, Mapping):
            self.problem(key or "(top level)", "must be a table")
            return None
        hints = typing.get_type_hints(cls)
        known = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        for name in raw:
            if name not in known:
                self.problem(_join(key, name), f"unknown key (expected one of: {', '.join(known)})")
        values: dict[str, Any] = {}
        for name, fld in known.items():
            sub = _join(key, name)
            if name not in raw:
                if _required(fld):
                    self.problem(sub, "is required")
                continue
            value = self.convert(hints[name], raw[name], sub)
            check = fld.metadata.get("check")
            if value is not None and check is not None and (msg := check(value)):
                self.problem(sub, msg)
            values[name] = value
        if any(v is None for v in values.values()) or self._missing(known, raw):
            return None
        return cls(**values)

    def _missing(self, known: Mapping[str, dataclasses.Field[Any]], raw: Mapping[str, Any]) -> bool:
        return any(_required(f) and n not in raw for n, f in known.items())

    def convert(self, tp: Any, raw: Any, key: str) -> Any:
        origin = typing.get_origin(tp)
        if origin in (types.UnionType, typing.Union):
            options = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(options) == 1:  # X | None
                return self.convert(options[0], raw, key)
            return self._network(raw, key)
        if origin is tuple:
            return self._tuple(typing.get_args(tp)[0], raw, key)
        if origin is Literal:
            allowed = typing.get_args(tp)
            if raw not in allowed:
                self.problem(key, f"must be one of {', '.join(map(repr, allowed))}, not {raw!r}")
                return None
            return raw
        if tp is SecretSource:
            return self._secret(raw, key)
        if dataclasses.is_dataclass(tp):
            return self.build(typing.cast(type[Any], tp), raw, key)
        return self._scalar(tp, raw, key)

    def _scalar(self, tp: Any, raw: Any, key: str) -> Any:
        if tp is Path:
            if not isinstance(raw, str) or not raw:
                self.problem(key, "must be a non-empty path string")
                return None
            return (self.source.parent / raw).resolve()
        if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
            return float(raw)
        if type(raw) is not tp:
            self.problem(key, f"must be {_type_name(tp)}, not {_type_name(type(raw))}")
            return None
        return raw

    def _tuple(self, item: Any, raw: Any, key: str) -> Any:
        if not isinstance(raw, list):
            self.problem(key, "must be a list")
            return None
        items = [self.convert(item, value, f"{key}[{i}]") for i, value in enumerate(raw)]
        return None if any(i is None for i in items) else tuple(items)

    def _network(self, raw: Any, key: str) -> IPNetwork | None:
        try:
            return ipaddress.ip_network(raw, strict=False)
        except (TypeError, ValueError):
            self.problem(key, f"must be an IP address or network such as 10.0.0.0/24, not {raw!r}")
            return None

    def _secret(self, raw: Any, key: str) -> SecretSource | None:
        if isinstance(raw, str):
            self.problem(key, 'secrets are never inline: use { file = "path" } or { env = "NAME" }')
            return None
        if not isinstance(raw, Mapping) or len(raw) != 1 or not ({"file", "env"} & set(raw)):
            self.problem(key, 'must be { file = "path" } or { env = "NAME" }')
            return None
        if "env" in raw:
            env = self.convert(str, raw["env"], f"{key}.env")
            return None if env is None else SecretSource(env=env)
        path = self.convert(Path, raw["file"], f"{key}.file")
        return None if path is None else SecretSource(file=path)


def _required(fld: dataclasses.Field[Any]) -> bool:
    return fld.default is dataclasses.MISSING and fld.default_factory is dataclasses.MISSING


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def _type_name(tp: Any) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _cross_checks(settings: Settings, b: _Builder) -> None:
    ingest = settings.ingest
    seen: dict[str, str] = {}
    for i, peer in enumerate(ingest.peers):
        title = peer.ae_title.strip(" ")
        if title in seen:
            b.problem(f"ingest.peers[{i}].ae_title", f"already used by peer {seen[title]!r}")
        seen[title] = peer.name
    if not ingest.peers:
        b.problem("ingest.peers", "at least one peer must be allowed to send")
    names = {peer.name for peer in ingest.peers}
    for i, rule in enumerate(settings.policy.rules):
        for j, name in enumerate(rule.peers):
            if name not in names:
                b.problem(
                    f"policy.rules[{i}].peers[{j}]", f"no peer named {name!r} in ingest.peers"
                )
    tls = ingest.tls
    if tls.enabled:
        for name in ("certificate", "private_key", "client_ca"):
            if getattr(tls, name) is None:
                b.problem(f"ingest.tls.{name}", "is required when ingest.tls.enabled = true")
    forward = settings.forward
    if forward.enabled:
        for name in ("url", "ca_bundle", "client_certificate", "client_key", "receiver_key"):
            if getattr(forward, name) is None:
                b.problem(f"forward.{name}", "is required when forward.enabled = true")
    _vault_checks(settings.vault, b)
    results = settings.results
    if results.enabled:
        if not forward.enabled:
            b.problem("results.enabled", "needs forward.enabled = true (the same server)")
        for name in ("private_key", "public_key", "pacs"):
            if getattr(results, name) is None:
                b.problem(f"results.{name}", "is required when results.enabled = true")


def _vault_checks(vault: VaultSettings, b: _Builder) -> None:
    if vault.engine == "sqlite":
        if vault.path is None:
            b.problem("vault.path", 'is required when vault.engine = "sqlite" (the default)')
        if vault.postgresql is not None:
            b.problem("vault.postgresql", 'is used only when vault.engine = "postgresql"')
        return
    pg = vault.postgresql
    if pg is None:
        b.problem("vault.postgresql", 'is required when vault.engine = "postgresql"')
        return
    if vault.path is not None:
        b.problem("vault.path", 'is used only when vault.engine = "sqlite"')
    if pg.sslmode.startswith("verify") and pg.ca is None:
        b.problem("vault.postgresql.ca", f'is required when sslmode = "{pg.sslmode}"')
    if pg.sslmode == "disable" and not _loopback(pg.host):
        b.problem(
            "vault.postgresql.sslmode",
            '"disable" is allowed only for a server on loopback or a Unix socket',
        )
    if (pg.certificate is None) != (pg.private_key is None):
        b.problem("vault.postgresql", "certificate and private_key go together")


def load(path: Path) -> Settings:
    """Read and validate `path`; raise ConfigError listing every problem."""
    source = path.resolve()
    try:
        raw = tomllib.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"{source}: configuration file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read: {exc.__class__.__name__}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    builder = _Builder(source)
    settings = builder.build(Settings, raw, "")
    if settings is not None:
        settings = dataclasses.replace(settings, source=source)
        _cross_checks(settings, builder)
    if builder.problems or settings is None:
        raise ConfigError(builder.problems)
    return typing.cast(Settings, settings)


_TABLE = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.-]+)\s*\]\]?")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_-]+)\s*=")


def key_line(text: str, key: str) -> int | None:
    """The 1-based line of TOML `text` that sets `key` (dotted; a secret's `key.file` is on
    the line of `key = { file = ... }`), or None: not set there (a default), or an array
    entry. For messages only: the file was parsed by tomllib, which keeps no positions."""
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        if header := _TABLE.match(line):
            table = header.group(1)
        elif assign := _ASSIGN.match(line):
            full = f"{table}.{assign.group(1)}" if table else assign.group(1)
            if key == full or key.startswith(full + "."):
                return number
    return None


def file_problems(settings: Settings) -> list[str]:
    """Problems with the files the settings point at: missing secrets, unreadable TLS files,
    each naming the file, the key and the line that sets it; and what a site must still fill in
    (a forwarding URL left at a placeholder, `_placeholder`).

    Separate from `load()` so `dicom-gateway keys` can load a config whose keys do not exist yet.
    """
    problems = _file_problems(settings)
    try:
        text = settings.source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return problems
    prefix = f"{settings.source}: "
    located = []
    for problem in problems:
        key = problem.removeprefix(prefix).split(":", 1)[0]
        line = key_line(text, key) if problem.startswith(prefix) else None
        located.append(problem if line is None else f"{problem} (line {line})")
    return located


def _file_problems(settings: Settings) -> list[str]:
    problems: list[str] = []
    for key, secret in (
        ("spool.master_key", settings.spool.master_key),
        ("vault.key", settings.vault.key),
    ):
        if secret.file is not None and not secret.file.is_file():
            problems.append(f"{settings.source}: {key}.file: no such file {secret.file}")
        if secret.env is not None and not os.environ.get(secret.env):
            problems.append(
                f"{settings.source}: {key}.env: environment variable {secret.env} is not set"
            )
    pg = settings.vault.postgresql
    if settings.vault.engine == "postgresql" and pg is not None:
        password = pg.password
        if password is not None and password.file is not None and not password.file.is_file():
            problems.append(
                f"{settings.source}: vault.postgresql.password.file: no such file {password.file}"
            )
        if password is not None and password.env is not None and not os.environ.get(password.env):
            problems.append(
                f"{settings.source}: vault.postgresql.password.env: environment variable "
                f"{password.env} is not set"
            )
        for name in ("ca", "certificate", "private_key"):
            value = getattr(pg, name)
            if value is not None and not value.is_file():
                problems.append(f"{settings.source}: vault.postgresql.{name}: no such file {value}")
    tls = settings.ingest.tls
    if tls.enabled:
        for name in ("certificate", "private_key", "client_ca"):
            value = getattr(tls, name)
            if value is not None and not value.is_file():
                problems.append(f"{settings.source}: ingest.tls.{name}: no such file {value}")
    forward = settings.forward
    if forward.enabled:
        for name in ("ca_bundle", "client_certificate", "client_key", "receiver_key"):
            value = getattr(forward, name)
            if value is not None and not value.is_file():
                problems.append(f"{settings.source}: forward.{name}: no such file {value}")
        host = _placeholder(forward.url)
        if host is not None:
            problems.append(
                f"{settings.source}: forward.url: {host} is a name reserved for examples, "
                "not an analysis server: set the URL its operator gave you"
            )
    return problems


#: Names reserved for examples (RFC 2606, RFC 6761). A forwarding URL on one is a placeholder
#: left in the configuration (the container image's reads https://analysis.example.org): a
#: gateway started with it would acknowledge studies that can never leave the spool.
_PLACEHOLDER_DOMAINS = ("example", "invalid", "example.com", "example.net", "example.org")


def _placeholder(url: str | None) -> str | None:
    """The host of `url` (one `load` accepted: `_https_problem`) when it is a name reserved
    for examples, else None."""
    host = (urlsplit(url).hostname or "").rstrip(".") if url else ""
    if any(host == d or host.endswith("." + d) for d in _PLACEHOLDER_DOMAINS):
        return host
    return None


# ---------------------------------------------------------------------------------------------
# Reloading (SIGHUP): which keys a running gateway takes from a new file.

#: Keys `dicom-gateway run` applies on SIGHUP without dropping an association: who may send
#: and how much is admitted, the listener's TLS files (read again even when the paths stay:
#: a renewed certificate; whether TLS is on needs a restart), the worker's rules (policy,
#: pixels, de-identification options but the site code, which names pseudonyms the spool and
#: vault already hold), the log level, retention windows and the worker time limit. Every
#: other key needs a restart (an allow-list: a key added later needs one until listed here).
RUNTIME_KEYS = frozenset(
    {
        "ingest.peers",
        "ingest.max_associations",
        "ingest.max_pending_connections",
        "ingest.max_instance_mib",
        "ingest.drain_seconds",
        "ingest.tls.certificate",
        "ingest.tls.private_key",
        "ingest.tls.client_ca",
        "ingest.tls.handshake_timeout",
        "policy",
        "pixels",
        *(f"deidentify.{f.name}" for f in dataclasses.fields(DeidentifySettings)),
        "logging.level",
        "retention",
        "workers.instance_timeout_seconds",
    }
    - {"deidentify.site_code"}
)
#: Sections `run` does not use (the receiver's and the console's own processes read them).
_OTHER_PROCESSES = frozenset({"receiver", "console", "source"})


def reloadable(running: Settings, new: Settings) -> tuple[Settings, tuple[str, ...]]:
    """The settings a running gateway moves to: `new` where a key is in `RUNTIME_KEYS`,
    `running` elsewhere; and the keys (names only, never values) that differ but need a
    restart."""
    merged, restart = _merge(running, new, "")
    return typing.cast(Settings, merged), tuple(restart)


def _merge(running: Any, new: Any, key: str) -> tuple[Any, list[str]]:
    if key in RUNTIME_KEYS or key in _OTHER_PROCESSES:
        return new, []
    if dataclasses.is_dataclass(running) and not isinstance(running, type):
        if type(running) is not type(new):  # a table set in one file, absent in the other
            return running, [key]
        values: dict[str, Any] = {}
        restart: list[str] = []
        for fld in dataclasses.fields(running):
            value, changed = _merge(
                getattr(running, fld.name), getattr(new, fld.name), _join(key, fld.name)
            )
            values[fld.name] = value
            restart += changed
        return dataclasses.replace(running, **values), restart
    return running, ([] if running == new else [key])
