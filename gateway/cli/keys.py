"""`dicom-gateway keys`: the keys and development certificates a configuration names and lacks.

Only what is missing is made; nothing is ever overwritten.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from gateway import devpki
from gateway.cli.common import EXIT_OK, settings_from
from gateway.errors import KeyFileError
from gateway.keyfiles import generate_key_file, write_key_file
from gateway.seal import keys as seal_keys


def cmd_keys(args: argparse.Namespace) -> int:
    """Create what the configuration needs and is missing; never overwrite a key."""
    settings = settings_from(args.config, files=False)
    for what, secret in (
        ("spool master key", settings.spool.master_key),
        ("vault key", settings.vault.key),
    ):
        if secret.file is not None:
            _create(secret.file, what, generate_key_file)
    pki = _DevPki()
    tls = settings.ingest.tls
    if tls.enabled and tls.certificate and tls.private_key and tls.client_ca:
        pki.pair(
            tls.client_ca,
            tls.certificate,
            tls.private_key,
            "dicom-gateway",
            (
                settings.ingest.host,
                "localhost",
            ),
        )
        stem = tls.client_ca.with_name(tls.client_ca.stem + "-client")
        pki.pair(
            tls.client_ca,
            stem.with_suffix(".crt"),
            stem.with_suffix(".key"),
            "dicom-gateway dev client",
        )
    forward, receiver = settings.forward, settings.receiver
    if forward.enabled and forward.ca_bundle and forward.client_certificate and forward.client_key:
        client_ca = receiver.client_ca or forward.ca_bundle
        pki.pair(
            client_ca, forward.client_certificate, forward.client_key, "dicom-gateway forwarder"
        )
        if receiver.certificate and receiver.private_key:
            hosts = (receiver.host, urlsplit(forward.url or "").hostname or "", "localhost")
            pki.pair(
                forward.ca_bundle,
                receiver.certificate,
                receiver.private_key,
                "dicom-gateway reference receiver",
                tuple(h for h in hosts if h),
            )
    if forward.enabled and forward.receiver_key and receiver.hpke_private_key:
        _hpke_pair(receiver.hpke_private_key, forward.receiver_key, "receiver")
    results = settings.results
    if results.enabled and results.private_key and results.public_key:
        _hpke_pair(results.private_key, results.public_key, "gateway results")
    console = settings.console
    if console.certificate and console.private_key:
        # a CA of the console's own unless officers' certificates are required (then theirs)
        ca = console.client_ca or console.certificate.with_name("console-ca.crt")
        names = tuple(h for h in (console.host, "localhost", "127.0.0.1") if h)
        pki.pair(ca, console.certificate, console.private_key, "dicom-gateway console", names)
        if console.client_ca:
            stem = console.client_ca.with_name(console.client_ca.stem + "-officer")
            pki.pair(console.client_ca, stem.with_suffix(".crt"), stem.with_suffix(".key"),
                     "dicom-gateway dev officer")  # fmt: skip
    return EXIT_OK


def _hpke_pair(private: Path, public: Path, what: str) -> None:
    if private.exists() and public.exists():
        print(f"kept    {what} HPKE key pair: {private}")
        return
    if private.exists() or public.exists():
        raise KeyFileError(
            f"only one half of the {what} HPKE key pair exists ({private}, {public}): "
            "move the other away and run keys again"
        )
    key_id = seal_keys.write_pair(private, public)
    print(f"created {what} HPKE key pair (key id {key_id}): {private}, {public}")


class _DevPki:
    """Development CAs (certificate + key beside it) and the pairs they issue; only what is
    missing is made, nothing is overwritten."""

    def __init__(self) -> None:
        self._cas: dict[Path, devpki.Issued] = {}

    def ca(self, certificate: Path) -> devpki.Issued:
        if certificate not in self._cas:
            key = certificate.with_suffix(".key")
            if certificate.exists() and key.exists():
                self._cas[certificate] = devpki.load(certificate, key)
            elif certificate.exists():
                raise KeyFileError(
                    f"{certificate}: a CA certificate without its key ({key}): new certificates "
                    "cannot be issued; remove the development PKI folder to start afresh"
                )
            else:
                ca = devpki.make_ca()
                devpki.write_pair(ca, certificate, key, write_key_file)
                print(f"created development CA: {certificate}")
                self._cas[certificate] = ca
        return self._cas[certificate]

    def pair(
        self,
        ca: Path,
        certificate: Path,
        key: Path,
        common_name: str,
        hosts: tuple[str, ...] = (),
    ) -> None:
        if certificate.exists() and key.exists():
            print(f"kept    {common_name} certificate: {certificate}")
            return
        issued = devpki.issue(self.ca(ca), common_name, server=bool(hosts), hosts=hosts)
        devpki.write_pair(issued, certificate, key, write_key_file)
        print(f"created {common_name} certificate: {certificate}")


def _create(path: Path, what: str, make: Callable[[Path], None]) -> None:
    if path.exists():
        print(f"kept    {what}: {path}")
        return
    make(path)
    print(f"created {what}: {path}")
