"""HPKE envelopes and the receiver's key files (issue 6)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gateway.errors import KeyFileError, SealError
from gateway.seal.envelope import Name, open_sealed, seal
from gateway.seal.keys import SuiteName, read_private, read_public, write_pair

STUDY, INSTANCE = "2.25.1234", "2.25.5678"


@pytest.fixture(params=["mlkem768-x25519", "x25519"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, SuiteName]:
    name: SuiteName = request.param
    private, public = tmp_path / "receiver.key", tmp_path / "receiver.pub"
    write_pair(private, public, name)
    return private, public, name


def test_a_sealed_instance_opens_only_under_its_own_name(
    pair: tuple[Path, Path, SuiteName],
) -> None:
    private, public = read_private(pair[0]), read_public(pair[1])
    assert private.public.key_id == public.key_id
    name = Name("instance", "SITE", STUDY, INSTANCE)
    body = seal(b"DICM de-identified", name, public)
    assert b"de-identified" not in body
    assert open_sealed(body, name, private) == b"DICM de-identified"
    for other in (
        Name("instance", "SITE", STUDY, "2.25.9999"),
        Name("instance", "SITE", "2.25.4321", INSTANCE),
        Name("instance", "OTHER", STUDY, INSTANCE),
        Name("manifest", "SITE", STUDY, INSTANCE),
    ):
        with pytest.raises(SealError):
            open_sealed(body, other, private)
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    with pytest.raises(SealError):
        open_sealed(tampered, name, private)
    with pytest.raises(SealError):
        open_sealed(body[:20], name, private)


def test_each_seal_is_fresh_and_the_hybrid_envelope_has_its_known_overhead(
    pair: tuple[Path, Path, SuiteName],
) -> None:
    public = read_public(pair[1])
    name = Name("manifest", "SITE", STUDY, "1")
    first, second = seal(b"x" * 100, name, public), seal(b"x" * 100, name, public)
    assert first != second  # a new ephemeral key each time
    overhead = {"mlkem768-x25519": 1120 + 16, "x25519": 32 + 16}[pair[2]]
    assert len(first) == 100 + overhead


def test_key_files_are_private_and_checked(tmp_path: Path) -> None:
    private, public = tmp_path / "k.key", tmp_path / "k.pub"
    key_id = write_pair(private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    assert read_private(private).public.key_id == key_id
    with pytest.raises(FileExistsError):
        write_pair(private, tmp_path / "other.pub")  # never overwrites a key
    os.chmod(private, 0o644)
    with pytest.raises(KeyFileError, match="mode 0600"):
        read_private(private)
    os.chmod(private, 0o600)
    document = json.loads(public.read_text())
    document["key_id"] = "0" * 16
    public.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="key id does not match"):
        read_public(public)
    with pytest.raises(KeyFileError, match="not a public key"):
        read_public(private)
    with pytest.raises(KeyFileError, match=str(tmp_path / "missing.pub")):
        read_public(tmp_path / "missing.pub")


def test_names_refuse_what_could_blur_the_binding() -> None:
    with pytest.raises(ValueError, match="only letters, digits"):
        Name("instance", "SITE", "2.25.1\0manifest", INSTANCE)
    with pytest.raises(ValueError, match="only letters, digits"):
        Name("instance", "SITE", "../etc", INSTANCE)
    # the layout docs/protocol.md gives receivers: NUL-separated ASCII fields
    info = Name("instance", "UT", "1.2", "3.4").info()
    assert info.split(b"\x00") == [b"dicom-gateway/1", b"instance", b"UT", b"1.2", b"3.4"]
