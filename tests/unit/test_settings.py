"""Settings: typed, frozen, every problem named by key and file."""

from __future__ import annotations

import base64
import dataclasses
import ipaddress
import typing
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gateway.errors import ConfigError
from gateway.settings import (
    RUNTIME_KEYS,
    Settings,
    ae_title_problem,
    file_problems,
    key_line,
    load,
    reloadable,
)
from tests.support import REPO, base_config, write_config


def test_example_config_loads_with_paths_relative_to_its_directory() -> None:
    settings = load(REPO / "config" / "gateway.example.toml")
    assert settings.ingest.ae_title == "DICOM_GATEWAY"
    assert settings.ingest.host == "127.0.0.1"
    assert settings.spool.directory == (REPO / "var" / "spool").resolve()
    assert settings.spool.master_key.file == (REPO / "var" / "keys" / "spool-master.key").resolve()
    assert [p.name for p in settings.ingest.peers] == ["local-test-pacs", "dcmtk-storescu"]
    assert settings.ingest.tls.enabled is False


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(write_config(tmp_path, base_config(tmp_path)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ingest.port = 1  # type: ignore[misc]


def test_defaults_fill_what_is_not_written(tmp_path: Path) -> None:
    path = tmp_path / "minimal.toml"
    path.write_text(
        "[spool]\ndirectory = 's'\nmaster_key = { env = 'GW_KEY' }\n"
        "[vault]\npath = 'v.sqlite3'\nkey = { env = 'GW_VAULT_KEY' }\n"
        "[[ingest.peers]]\nname = 'pacs'\nae_title = 'PACS'\n"
    )
    settings = load(path)
    assert settings.ingest.port == 11112
    assert settings.ingest.max_pdu_size == 262144
    assert settings.spool.master_key.env == "GW_KEY"
    assert settings.spool.min_free_bytes == 1024 * 1024 * 1024
    assert settings.metrics.host == "127.0.0.1"


def test_peer_addresses_accept_hosts_and_networks(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["ingest"]["peers"][0]["addresses"] = ["10.1.2.3", "192.168.0.0/16"]
    peer = load(write_config(tmp_path, config)).ingest.peers[0]
    assert peer.addresses == (
        ipaddress.ip_network("10.1.2.3/32"),
        ipaddress.ip_network("192.168.0.0/16"),
    )
    assert peer.allows_address("192.168.7.9")
    assert peer.allows_address("::ffff:10.1.2.3")
    assert not peer.allows_address("10.1.2.4")


def test_duplicate_peer_ae_titles_and_missing_tls_files_are_problems(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["ingest"]["peers"][1]["ae_title"] = "PACS "
    config["ingest"]["tls"] = {"enabled": True}
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError) as caught:
        load(path)
    problems = caught.value.problems
    assert (
        f"{path.resolve()}: ingest.peers[1].ae_title: already used by peer 'test-pacs'" in problems
    )
    for name in ("certificate", "private_key", "client_ca"):
        assert (
            f"{path.resolve()}: ingest.tls.{name}: is required when ingest.tls.enabled = true"
            in (problems)
        )


def test_missing_required_keys_are_named(tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.problems == [
        f"{path.resolve()}: spool: is required",
        f"{path.resolve()}: vault: is required",
    ]


def test_bad_peer_address_is_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["ingest"]["peers"][0]["addresses"] = ["not-an-ip"]
    path = write_config(tmp_path, config)
    with pytest.raises(ConfigError, match=r"ingest\.peers\[0\]\.addresses\[0\]: must be an IP"):
        load(path)


@pytest.mark.parametrize(
    ("title", "ok"),
    [("PACS", True), ("A" * 16, True), ("A" * 17, False), ("   ", False), ("ÄRZTE", False)],
)
def test_ae_title_rules_follow_ps3_5(title: str, ok: bool) -> None:
    assert (ae_title_problem(title) is None) is ok


def test_container_config_is_valid() -> None:
    settings = load(REPO / "deploy" / "container" / "gateway.toml")
    assert settings.ingest.host == "0.0.0.0"
    assert settings.spool.directory == Path("/var/lib/dicom-gateway/spool")


def test_deidentify_and_policy_keys_are_checked_and_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["deidentify"] = {"site_code": "st-mary's", "uid_root": "1.2.03.4"}
    config["policy"] = {
        "rules": [
            {"action": "drop", "modalities": ["MG"], "peers": ["nobody"]},
            {"action": "hold", "reason": "bad reason!"},
        ]
    }
    text = _problems(tmp_path, config)
    assert "deidentify.site_code: must be 1-8 capital letters or digits" in text
    assert "deidentify.uid_root: must be a UID root" in text
    assert "policy.rules[1].action: must be one of 'process', 'drop'" in text
    assert "policy.rules[1].reason: must be 1-64 lower-case letters" in text
    good = base_config(tmp_path)
    good["deidentify"] = {"site_code": "STM01", "uid_root": "1.2.826.0.1.3680043.10.99"}
    good["policy"] = {"rules": [{"action": "drop", "peers": ["nobody"]}]}
    with pytest.raises(ConfigError) as raised:
        load(write_config(tmp_path, good))
    assert raised.value.problems == [
        f"{tmp_path / 'gateway.toml'}: policy.rules[0].peers[0]: no peer named 'nobody' in "
        "ingest.peers"
    ]
    good["policy"] = {"rules": [{"action": "drop", "peers": ["test-pacs"], "reason": "no-mg"}]}
    settings = load(write_config(tmp_path, good))
    assert settings.deidentify.site_code == "STM01"
    assert settings.policy.rules[0].peers == ("test-pacs",)


def test_pixel_keys_are_checked_and_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["pixels"] = {
        "skip": ["ultrasound"],
        "keep_markers": ["L", "Kowalski"],
        "margin": 500,
        "max_seconds": 0,
        "ctp_scripts": [""],
    }
    text = _problems(tmp_path, config)
    assert "pixels.skip: only 'cross-sectional', 'other-image' may be skipped" in text
    assert "pixels.keep_markers: markers are 1-4 ASCII letters or digits" in text
    assert "pixels.margin: must be between 0 and 64" in text
    assert "pixels.max_seconds: must be a finite number above zero" in text
    assert "pixels.ctp_scripts[0]: must be a non-empty path string" in text
    config["pixels"] = {"skip": ["cross-sectional"], "ctp_scripts": ["rules/site.script"]}
    settings = load(write_config(tmp_path, config))
    assert settings.pixels.skip == ("cross-sectional",)
    assert settings.pixels.ctp_scripts == ((tmp_path / "rules" / "site.script").resolve(),)
    assert settings.pixels.ultrasound_regions


def _problems(tmp_path: Path, config: dict[str, Any]) -> str:
    """Every problem `load` finds in `config`, one per line."""
    with pytest.raises(ConfigError) as raised:
        load(write_config(tmp_path, config))
    return "\n".join(raised.value.problems)


def test_forward_keys_are_checked_and_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["forward"] = {"enabled": True, "url": "http://vendor.example", "spki_pin": "abc"}
    config["receiver"] = {"port": 70000}
    text = _problems(tmp_path, config)
    assert "forward.url: must be an https:// URL" in text
    assert "forward.spki_pin: must be a base64 SHA-256 digest" in text
    assert "forward.ca_bundle: is required when forward.enabled = true" in text
    assert "forward.receiver_key: is required when forward.enabled = true" in text
    assert "receiver.port: must be a TCP port" in text
    config["forward"] = {
        "enabled": True,
        "url": "https://ai.vendor.test:8443",
        "ca_bundle": "ca.crt",
        "client_certificate": "c.crt",
        "client_key": "c.key",
        "receiver_key": "r.pub",
        "spki_pin": base64.b64encode(bytes(32)).decode(),
        "retry_hours": 12,
    }
    config["receiver"] = {}
    assert "forward.retry_hours: must be at least 24" in _problems(tmp_path, config)
    config["forward"]["retry_hours"] = 48
    settings = load(write_config(tmp_path, config))
    missing = [p.split(": ")[1] for p in file_problems(settings) if ": forward." in p]
    assert missing == [
        "forward.ca_bundle",
        "forward.client_certificate",
        "forward.client_key",
        "forward.receiver_key",
    ]


@pytest.mark.parametrize(
    ("url", "placeholder"),
    [
        ("https://analysis.example.org", True),
        ("https://EXAMPLE.com:8443/ai", True),
        ("https://vendor.example", True),
        ("https://ai.vendor.invalid.", True),
        ("https://example.net", True),
        ("https://ai.vendor.test:8443", False),  # .test: for test setups, kept
        ("https://example.org.vendor.net", False),
        ("https://myexample.org", False),
        ("https://127.0.0.1:8443", False),
    ],
)
def test_a_forwarding_url_left_at_an_example_name_is_a_site_problem(
    tmp_path: Path, url: str, placeholder: bool
) -> None:
    """check-config and run name it with its line (file_problems): started with it, the gateway
    would acknowledge studies that can never leave the spool. Only when forwarding is on."""
    config = base_config(tmp_path)
    config["forward"] = {"enabled": True, "url": url}
    for key in ("ca_bundle", "client_certificate", "client_key", "receiver_key"):
        config["forward"][key] = f"{key}.pem"  # missing files: problems of their own
    path = write_config(tmp_path, config)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "url =" in text)
    problems = [p for p in file_problems(load(path)) if "forward.url" in p]
    host = (urlsplit(url).hostname or "").rstrip(".")
    expected = (
        f"{path}: forward.url: {host} is a name reserved for examples, not an analysis "
        f"server: set the URL its operator gave you (line {line})"
    )
    assert problems == ([expected] if placeholder else [])
    config["forward"]["enabled"] = False
    assert not [
        p for p in file_problems(load(write_config(tmp_path, config))) if "forward.url" in p
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://[::1", "with a valid host and port"),
        ("https://ai.vendor.test:port", "with a valid host and port"),
        ("https:///v1", "with a host"),
    ],
)
def test_a_forwarding_url_without_a_usable_host_is_named(
    tmp_path: Path, url: str, problem: str
) -> None:
    """Refused by `load` with the key, not a traceback from whatever parses it later."""
    config = base_config(tmp_path)
    config["forward"] = {"url": url}
    assert f"forward.url: must be an https:// URL {problem}" in _problems(tmp_path, config)


def test_key_line_finds_where_a_key_is_set() -> None:
    """For messages about files the settings name: tomllib keeps no positions."""
    text = (
        "[ingest]\nport = 11112\n\n[[ingest.peers]]\nname = 'a'\n\n[ingest.tls]\n"
        "client_ca = 'ca.crt'\n[spool]\nmaster_key = { file = 'k' }\n"
    )
    assert key_line(text, "ingest.port") == 2
    assert key_line(text, "ingest.tls.client_ca") == 8
    assert key_line(text, "spool.master_key.file") == 10
    assert key_line(text, "spool.directory") is None  # not set: no line
    assert key_line(text, "tls.client_ca") is None  # only the full key


def test_listen_backlog_is_checked_and_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["ingest"]["listen_backlog"] = 0
    assert "ingest.listen_backlog: must be between 1 and 65535" in _problems(tmp_path, config)
    config["ingest"]["listen_backlog"] = 512
    assert load(write_config(tmp_path, config)).ingest.listen_backlog == 512


def test_metrics_bounds_are_checked_and_named(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["metrics"].update(max_connections=0, request_timeout=0.0)
    text = _problems(tmp_path, config)
    assert "metrics.max_connections: must be between 1 and 10000" in text
    assert "metrics.request_timeout: must be a finite number above zero" in text
    config["metrics"].update(max_connections=8, request_timeout=2.5)
    metrics = load(write_config(tmp_path, config)).metrics
    assert (metrics.max_connections, metrics.request_timeout) == (8, 2.5)


def _keys(cls: type[Any], prefix: str = "") -> set[str]:
    """Every key of the schema, tables included, as `section.key`."""
    keys = set()
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        keys.add(prefix + fld.name)
        if isinstance(hints[fld.name], type) and dataclasses.is_dataclass(hints[fld.name]):
            keys |= _keys(hints[fld.name], f"{prefix}{fld.name}.")
    return keys


def test_every_key_a_reload_applies_is_a_key_of_the_schema() -> None:
    """A misspelt entry would silently turn a runtime key into one that needs a restart."""
    assert sorted(RUNTIME_KEYS - _keys(Settings)) == []


def test_a_reload_takes_runtime_keys_and_names_the_others_without_values(tmp_path: Path) -> None:
    running = load(write_config(tmp_path, base_config(tmp_path)))
    config = base_config(tmp_path)
    config["ingest"]["peers"].append({"name": "ct-2", "ae_title": "CT2"})
    config["ingest"]["port"] = 4242
    config["pixels"] = {"margin": 9}
    config["deidentify"] = {"site_code": "OTHER", "retain_uids": True}
    config["console"] = {"port": 9999}  # another process's section: not compared
    new = load(write_config(tmp_path, config))
    merged, restart = reloadable(running, new)
    assert sorted(restart) == ["deidentify.site_code", "ingest.port"]
    assert [p.name for p in merged.ingest.peers] == ["test-pacs", "dcmtk", "ct-2"]
    assert merged.ingest.port == running.ingest.port
    assert merged.pixels.margin == 9
    assert merged.deidentify.retain_uids is True
    assert merged.deidentify.site_code == running.deidentify.site_code
    assert reloadable(running, running) == (running, ())
