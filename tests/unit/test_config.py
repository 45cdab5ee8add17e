"""Table tests for saltapi_twisted.config: reading the master config and the API block.

Every error is checked to be one line naming the file and the key; the
include rules are also compared with Salt's own ``master_config`` (in a
subprocess, skipped when Salt is not installed).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from saltapi_twisted.config import (
    HASH_HEX_LENGTH,
    IMPLEMENTED_CLIENTS,
    ApiConfig,
    ConfigError,
    MasterSettings,
    load_config,
    read_master_config,
    resolve_config_path,
)

GOOD = """\
netapi_enable_clients: [local, runner]
rest_tornado:
  port: 8000
  address: 127.0.0.1
  disable_ssl: true
"""


CLIENTS = "netapi_enable_clients: [local, runner]\n"
DEFAULT_BLOCK = {"port": "8000", "address": "127.0.0.1", "disable_ssl": "true"}


def with_block_line(line: str) -> str:
    """GOOD with *line* (``key: value``) replacing or joining the block's keys."""
    key = line.split(":", 1)[0].strip()
    values = dict(DEFAULT_BLOCK)
    values.pop("address" if key == "host" else key, None)
    block = "".join(f"  {k}: {v}\n" for k, v in values.items())
    return CLIENTS + "rest_tornado:\n" + block + f"  {line}\n"


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write *files* (relative path -> text) under *root*; return ``root/master``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root / "master"


def load(root: Path, files: dict[str, str], **kwargs: Any) -> ApiConfig:
    return load_config(str(write_tree(root, files)), **kwargs)


def load_error(root: Path, files: dict[str, str], **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(root, files, **kwargs)
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


# --------------------------------------------------------------------------
# Which block, which files


def test_rest_tornado_alone(tmp_path: Path) -> None:
    config = load(tmp_path, {"master": GOOD})
    assert config.block_name == "rest_tornado"
    assert (config.port, config.address, config.disable_ssl, config.tls) == (8000, "127.0.0.1", True, False)
    assert config.master.config_file == str(tmp_path / "master")
    assert config.warnings == ()


def test_rest_twisted_preferred(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {"master": GOOD + "rest_twisted:\n  port: 8001\n  address: ::1\n  disable_ssl: true\n"},
    )
    assert (config.block_name, config.port, config.address) == ("rest_twisted", 8001, "::1")


def test_section_chooses_the_block(tmp_path: Path) -> None:
    files = {"master": GOOD + "rest_twisted:\n  port: 8001\n  disable_ssl: true\n"}
    assert load(tmp_path, files, section="rest_tornado").port == 8000
    message = load_error(tmp_path, {"master": GOOD}, section="rest_twisted")
    assert f"{tmp_path / 'master'}: no rest_twisted block" in message


def test_directory_means_master_inside(tmp_path: Path) -> None:
    write_tree(tmp_path, {"master": GOOD})
    assert resolve_config_path(str(tmp_path)) == str(tmp_path / "master")
    assert resolve_config_path(str(tmp_path / "master")) == str(tmp_path / "master")
    config = load_config(str(tmp_path))
    assert config.port == 8000 and config.master.config_file == str(tmp_path / "master")


def test_master_d_overrides_the_main_file(tmp_path: Path) -> None:
    """As in Salt, an included block replaces the main file's block as a whole."""
    config = load(
        tmp_path,
        {
            "master": GOOD.replace("  disable_ssl: true\n", "  disable_ssl: true\n  debug: true\n"),
            "master.d/api.conf": "rest_tornado:\n  port: 9000\n  address: ::1\n  disable_ssl: true\n",
            "master.d/ignored.txt": "rest_tornado: [not, read]\n",
        },
    )
    assert (config.port, config.address, config.debug) == (9000, "::1", False)


def test_master_d_files_merge_in_order(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "master": "netapi_enable_clients: [local]\n",
            "master.d/10-api.conf": "rest_tornado:\n  port: 9000\n  disable_ssl: true\n  address: 127.0.0.1\n",
            "master.d/20-more.conf": "rest_tornado:\n  websockets: true\n  port: 9001\n"
            "netapi_enable_clients: [runner]\n",
            "master.d/30-more.conf": "netapi_enable_clients: [wheel, runner]\n",
        },
    )
    assert (config.port, config.websockets, config.disable_ssl) == (9001, True, True)
    # the main file's list is replaced; master.d lists are joined
    assert config.master.netapi_enable_clients == ("runner", "wheel")


@pytest.mark.parametrize(
    ("main", "expected_port"),
    [
        pytest.param("default_include: api.d/*.yaml\n", 9100, id="custom-default-include"),
        pytest.param("default_include: [api.d/*.yaml, master.d/*.conf]\n", 9200, id="default-include-list"),
        pytest.param("default_include:\n", 8000, id="default-include-null"),
        pytest.param("include: extra/one.conf\n", 9300, id="include-string"),
        pytest.param("include: [extra/*.conf]\n", 9400, id="include-glob"),
        pytest.param("include: [extra/none-*.conf]\n", 9200, id="include-glob-matching-nothing"),
        pytest.param("include:\n", 9200, id="include-null"),
        pytest.param("include: [{tmp}/extra/one.conf]\n", 9300, id="include-absolute"),
        pytest.param("include: extra/nested.conf\n", 9500, id="nested-include"),
    ],
)
def test_includes(tmp_path: Path, main: str, expected_port: int) -> None:
    files = {
        "master": GOOD + main.format(tmp=tmp_path),
        "api.d/a.yaml": "rest_tornado: {port: 9100, disable_ssl: true, address: 127.0.0.1}\n",
        "master.d/a.conf": "rest_tornado: {port: 9200, disable_ssl: true, address: 127.0.0.1}\n",
        "extra/one.conf": "rest_tornado: {port: 9300, disable_ssl: true, address: 127.0.0.1}\n",
        "extra/two.conf": "rest_tornado: {port: 9400}\n",
        "extra/deeper/last.conf": "rest_tornado: {port: 9500, disable_ssl: true, address: 127.0.0.1}\n",
        "extra/nested.conf": "include: deeper/last.conf\nrest_tornado: {port: 9450, disable_ssl: true}\n",
    }
    assert load(tmp_path, files).port == expected_port


def test_origin_names_the_file_that_set_each_key(tmp_path: Path) -> None:
    master = write_tree(
        tmp_path,
        {"master": GOOD + "hash_type: md5\n", "master.d/api.conf": "rest_tornado: {port: 9000}\n"},
    )
    options, origin = read_master_config(str(master))
    assert options["hash_type"] == "md5"
    assert origin["hash_type"] == str(master)
    assert origin["rest_tornado"] == str(tmp_path / "master.d" / "api.conf")


@pytest.mark.parametrize(
    ("files", "where", "reason"),
    [
        pytest.param(
            {"master": GOOD + "include: nope.conf\n"}, "master", "include: nope.conf does not exist", id="missing"
        ),
        pytest.param({"master": GOOD + "include: {a: b}\n"}, "master", "include: must be a path", id="not-a-path"),
        pytest.param({"master": GOOD + "default_include: 7\n"}, "master", "default_include: must be", id="default-7"),
        pytest.param(
            {"master": GOOD + "include: loop.conf\n", "loop.conf": "include: loop.conf\n"},
            "loop.conf",
            "levels deep",
            id="loop",
        ),
    ],
)
def test_include_errors(tmp_path: Path, files: dict[str, str], where: str, reason: str) -> None:
    message = load_error(tmp_path, files)
    assert message.startswith(f"{tmp_path / where}: ")
    assert reason in message


# --------------------------------------------------------------------------
# Salt's defaults and master options


def test_master_defaults(tmp_path: Path) -> None:
    master = load(tmp_path, {"master": GOOD}).master
    assert master == MasterSettings(config_file=str(tmp_path / "master"), netapi_enable_clients=("local", "runner"))
    assert (master.sock_dir, master.ret_port, master.interface, master.ipc_mode) == (
        "/var/run/salt/master",
        4506,
        "0.0.0.0",
        "ipc",
    )
    assert (master.tcp_master_pub_port, master.tcp_master_pull_port) == (4512, 4513)
    assert (master.hash_type, master.token_length) == ("sha256", 64)
    assert (master.token_expire, master.timeout, master.gather_job_timeout, master.rest_timeout) == (
        43200.0,
        5.0,
        10.0,
        300.0,
    )
    assert (master.order_masters, master.syndic_wait, master.external_auth) == (False, 5.0, {})
    assert master.request_address == "tcp://127.0.0.1:4506"
    assert master.enabled_clients == ("local", "runner")


@pytest.mark.parametrize(
    ("extra", "attribute", "expected"),
    [
        ("ret_port: 14506", "request_address", "tcp://127.0.0.1:14506"),
        ("interface: '::'", "request_address", "tcp://[::1]:4506"),
        ("interface: 10.1.2.3", "request_address", "tcp://10.1.2.3:4506"),
        ("ipc_mode: tcp", "ipc_mode", "tcp"),
        ("tcp_master_pub_port: 5512", "tcp_master_pub_port", 5512),
        ("token_expire: 60", "token_expire", 60.0),
        ("timeout: 12", "timeout", 12.0),
        ("order_masters: true", "order_masters", True),
        ("external_auth: {pam: {fred: [test.*]}}", "external_auth", {"pam": {"fred": ["test.*"]}}),
        ("netapi_enable_clients: [local, ssh, bogus, wheel_async]", "enabled_clients", ("local", "wheel_async")),
        ("netapi_enable_clients:", "enabled_clients", ()),
    ]
    + [(f"hash_type: {name}", "token_length", length) for name, length in HASH_HEX_LENGTH.items()],
)
def test_master_options(tmp_path: Path, extra: str, attribute: str, expected: Any) -> None:
    text = GOOD if extra.startswith("netapi_enable_clients") is False else GOOD.replace(CLIENTS, "")
    master = load(tmp_path, {"master": text + extra + "\n"}).master
    assert getattr(master, attribute) == expected


@pytest.mark.parametrize(
    ("extra", "sock_dir"),
    [
        ("", "/var/run/salt/master"),
        ("sock_dir: /run/salt/master/", "/run/salt/master"),
        ("root_dir: {tmp}/root", "{tmp}/root/var/run/salt/master"),
        ("root_dir: {tmp}/root\nsock_dir: /run/salt", "{tmp}/root/run/salt"),
        ("root_dir: {tmp}/root\nsock_dir: {tmp}/root/sock\ncachedir: {tmp}/root/cache", "{tmp}/root/sock"),
        (
            "root_dir: {tmp}/root\nsock_dir: {tmp}/root/a/much/longer/sock/dir",
            "{tmp}/root/var/cache/salt/master/.salt-unix",
        ),
        ("root_dir: {tmp}/root\nsock_dir: relative/sock", "{tmp}/root/relative/sock"),
        ("sock_dir: /a/very/long/socket/directory/path/for/salt", "/var/cache/salt/master/.salt-unix"),
        ("cachedir: /c\nsock_dir: /twelve/chars", "/c/.salt-unix"),
        ("sock_dir:", "/var/run/salt/master"),
    ],
)
def test_sock_dir_as_salt_computes_it(tmp_path: Path, extra: str, sock_dir: str) -> None:
    master = load(tmp_path, {"master": GOOD + extra.format(tmp=tmp_path) + "\n"}).master
    assert master.sock_dir == sock_dir.format(tmp=tmp_path)


# --------------------------------------------------------------------------
# The API block: values


def test_block_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, {"master": "rest_tornado:\n  port: 8000\n  disable_ssl: true\n"})
    expected = ApiConfig(
        master=config.master,
        block_name="rest_tornado",
        port=8000,
        disable_ssl=True,
        warnings=config.warnings,
    )
    assert config == expected
    assert (config.backlog, config.ssl_ciphers, config.ssl_min_version) == (
        128,
        "ECDHE+AESGCM:ECDHE+CHACHA20",
        "TLSv1.2",
    )
    assert (config.webhook_disable_auth, config.websockets, config.cors_origin) == (False, False, ())


@pytest.mark.parametrize(
    ("line", "attribute", "expected"),
    [
        ("port: '8080'", "port", 8080),
        ("port: 08080", "port", 8080),
        ("port: 65535", "port", 65535),
        ("host: 127.0.0.2", "address", "127.0.0.2"),
        ("address: '::1'", "address", "::1"),
        ("address:", "address", None),
        ("backlog: 1024", "backlog", 1024),
        ("debug: 'yes'", "debug", True),
        ("debug: 'False'", "debug", False),
        ("debug: 1", "debug", True),
        ("websockets: on", "websockets", True),
        ("cors_origin: '*'", "cors_origin", ("*",)),
        (
            "cors_origin: [https://a.example, https://b.example]",
            "cors_origin",
            ("https://a.example", "https://b.example"),
        ),
        ("endpoints: unix:/run/salt-api.sock", "endpoints", ("unix:/run/salt-api.sock",)),
        ("ssl_min_version: TLSv1.3", "ssl_min_version", "TLSv1.3"),
        ("request_body_timeout: 2.5", "request_body_timeout", 2.5),
        ("events_keepalive: 0", "events_keepalive", 0.0),
        ("salt_version: '3006.10'", "salt_version_header", "3006.10"),
        ("salt_version_header: 2024-01-01", "salt_version_header", "2024-01-01"),
        ("jobs_format: cherrypy", "jobs_format", "cherrypy"),
        ("trusted_proxies: [10.0.0.0/8]", "trusted_proxies", ("10.0.0.0/8",)),
    ],
)
def test_block_values(tmp_path: Path, line: str, attribute: str, expected: Any) -> None:
    config = load(tmp_path, {"master": with_block_line(line)})
    assert getattr(config, attribute) == expected


def test_yaml_merge_keys_explicit_key_wins(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        {
            "master": """\
            netapi_enable_clients: [local]
            base: &base {port: 1111, disable_ssl: true, address: 127.0.0.1, debug: true}
            rest_tornado:
              <<: *base
              port: 2222
            """
        },
    )
    assert (config.port, config.debug, config.disable_ssl) == (2222, True, True)


# --------------------------------------------------------------------------
# Errors: one line, naming the file and the key


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ("port: eighty", "port", "whole number from 1 to 65535"),
        ("port: 70000", "port", "whole number from 1 to 65535"),
        ("port: 0", "port", "whole number"),
        ("port: -1", "port", "whole number"),
        ("port: 80.5", "port", "whole number"),
        ("port: true", "port", "whole number"),
        ("port: [80]", "port", "whole number"),
        ("port: '\u00b2'", "port", "whole number"),  # superscript two: str.isdigit() but not int()
        ("port: '\u0663'", "port", "whole number"),  # Arabic-Indic three
        ("address: not-an-ip", "address", "'not-an-ip' is not an IP address"),
        ("address: localhost", "address", "is not an IP address"),
        ("address: 300.1.1.1", "address", "is not an IP address"),
        ("address: 10", "address", "must be an IP address"),
        ("host: 127.0.0.1:80", "host", "is not an IP address"),
        ("disable_ssl: maybe", "disable_ssl", "must be true or false"),
        ("debug: 2", "debug", "must be true or false"),
        ("websockets: [true]", "websockets", "must be true or false"),
        ("webhook_disable_auth: {a: 1}", "webhook_disable_auth", "must be true or false"),
        ("backlog: 0", "backlog", "whole number"),
        ("ssl_min_version: TLSv1.1", "ssl_min_version", "must be one of TLSv1.2, TLSv1.3"),
        ("cors_origin: {a: b}", "cors_origin", "origin"),
        ("request_body_timeout: 0", "request_body_timeout", "above 0"),
        ("request_body_timeout: .nan", "request_body_timeout", "number of seconds"),
        ("events_keepalive: -1", "events_keepalive", "0 or more"),
        ("max_request_body_size: 1e6", "max_request_body_size", "whole number"),
        ("cookie_samesite: None", "cookie_samesite", "must be one of Strict, Lax"),
        ("ssl_ciphers: [a, b]", "ssl_ciphers", "must be a string"),
        ("salt_version: 3006.10", "salt_version", "must be a string"),
    ],
)
def test_block_value_errors(tmp_path: Path, line: str, key: str, reason: str) -> None:
    message = load_error(tmp_path, {"master": with_block_line(line)})
    assert message.startswith(f"{tmp_path / 'master'}: rest_tornado: {key}: "), message
    assert reason in message


def test_error_names_the_included_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"master": GOOD, "master.d/api.conf": "rest_tornado: {port: 70000}\n"})
    assert message.startswith(f"{tmp_path / 'master.d' / 'api.conf'}: rest_tornado: port: ")


@pytest.mark.parametrize(
    ("files", "where", "reason"),
    [
        pytest.param(
            {"master": "rest_tornado:\n  disable_ssl: true\n"}, "master", "rest_tornado: port: missing", id="no-port"
        ),
        pytest.param(
            {"master": "rest_tornado:\n  port:\n  disable_ssl: true\n"},
            "master",
            "rest_tornado: port: must",
            id="null-port",
        ),
        pytest.param(
            {"master": "interface: 0.0.0.0\n"}, "master", "no rest_twisted or rest_tornado block", id="no-block"
        ),
        pytest.param({"master": ""}, "master", "no rest_twisted or rest_tornado block", id="empty-file"),
        pytest.param({"master": "rest_tornado:\n"}, "master", "rest_tornado: must be a mapping", id="null-block"),
        pytest.param(
            {"master": "rest_tornado: [port, 8000]\n"}, "master", "rest_tornado: must be a mapping", id="list-block"
        ),
        pytest.param(
            {"master": "rest_tornado: 'port: 8000'\n"}, "master", "rest_tornado: must be a mapping", id="str-block"
        ),
        pytest.param({"master": "- a\n- b\n"}, "master", "the top level must be a mapping", id="top-level-list"),
        pytest.param({"master": "just words\n"}, "master", "the top level must be a mapping", id="top-level-str"),
        pytest.param({"master": GOOD + "ret_port: x\n"}, "master", "ret_port: must be a whole number", id="ret_port"),
        pytest.param({"master": GOOD + "hash_type: sha999\n"}, "master", "hash_type: must be one of", id="hash_type"),
        pytest.param(
            {"master": GOOD + "interface: nowhere\n"}, "master", "interface: 'nowhere' is not", id="interface"
        ),
        pytest.param(
            {"master": GOOD + "ipc_mode: udp\n"}, "master", "ipc_mode: must be one of ipc, tcp", id="ipc_mode"
        ),
        pytest.param({"master": GOOD + "timeout: soon\n"}, "master", "timeout: must be a number", id="timeout"),
        pytest.param({"master": GOOD + "sock_dir: [a]\n"}, "master", "sock_dir: must be a path", id="sock_dir"),
        pytest.param(
            {"master": GOOD + "external_auth: [pam]\n"}, "master", "external_auth: must be a mapping", id="eauth"
        ),
        pytest.param(
            {"master": GOOD, "master.d/c.conf": "netapi_enable_clients: local\n"},
            "master.d/c.conf",
            "netapi_enable_clients: must be a list",
            id="clients-not-list",
        ),
    ],
)
def test_structure_errors(tmp_path: Path, files: dict[str, str], where: str, reason: str) -> None:
    message = load_error(tmp_path, files)
    assert message.startswith(f"{tmp_path / where}: "), message
    assert reason in message


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path / "nope"))
    assert str(caught.value) == f"{tmp_path / 'nope'}: no such file"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        pytest.param("rest_tornado:\n  port: 8000\n   disable_ssl: true\n", 3, id="bad-indent"),
        pytest.param("rest_tornado: {port: 8000\n", 2, id="unclosed-flow"),
        pytest.param("a: 1\nb: [1, 2\nc: 3\n", 3, id="unclosed-list"),
        pytest.param("rest_tornado: {port: 1}\nrest_tornado: {port: 2}\n", 2, id="duplicate-block"),
        pytest.param("rest_tornado:\n  port: 1\n  port: 2\n", 3, id="duplicate-key"),
        pytest.param("a: *nothing\n", 1, id="unknown-alias"),
        pytest.param('a: "\\x00" \x07\n', 1, id="control-char"),
    ],
)
def test_bad_yaml_names_file_and_line(tmp_path: Path, text: str, line: int) -> None:
    message = load_error(tmp_path, {"master": text})
    assert message.startswith(f"{tmp_path / 'master'}: invalid YAML")
    if "\x07" not in text:  # the reader reports no line for a bad character
        assert f"(line {line}, column " in message


def test_duplicate_key_message(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"master": "rest_tornado: {port: 1}\nrest_tornado: {port: 2}\n"})
    assert "found conflicting ID 'rest_tornado'" in message


def test_bad_yaml_in_master_d_names_that_file(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"master": GOOD, "master.d/broken.conf": "a: [\n"})
    assert message.startswith(f"{tmp_path / 'master.d' / 'broken.conf'}: invalid YAML (line 2, column 1)")


def test_not_utf8(tmp_path: Path) -> None:
    write_tree(tmp_path, {"master": GOOD})
    (tmp_path / "master.d").mkdir()
    (tmp_path / "master.d" / "latin1.conf").write_bytes(b"comment: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(tmp_path))
    assert str(caught.value).startswith(str(tmp_path / "master.d" / "latin1.conf") + ": ")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "payload",
    [
        '!!python/object/apply:os.system ["touch {sentinel}"]',
        '!!python/object/apply:subprocess.call [["touch", "{sentinel}"]]',
        '!!python/object/new:subprocess.Popen [["touch", "{sentinel}"]]',
        "!!python/name:os.system",
        "!!python/module:os",
    ],
)
def test_python_tags_refused_without_side_effect(tmp_path: Path, payload: str) -> None:
    """Checklist G4: a python tag in master.d stops start-up and runs nothing."""
    sentinel = tmp_path / "S"
    message = load_error(
        tmp_path,
        {"master": GOOD, "master.d/x.conf": "evil: " + payload.format(sentinel=sentinel) + "\n"},
    )
    assert message.startswith(f"{tmp_path / 'master.d' / 'x.conf'}: invalid YAML (line 1, column 7)")
    assert "could not determine a constructor" in message
    assert not sentinel.exists()


# --------------------------------------------------------------------------
# TLS-related start-up checks


def test_tls_needs_a_certificate(tmp_path: Path) -> None:
    message = load_error(tmp_path, {"master": "netapi_enable_clients: [local]\nrest_tornado:\n  port: 8000\n"})
    assert message.startswith(f"{tmp_path / 'master'}: rest_tornado: ssl_crt: missing")
    assert "disable_ssl" in message


@pytest.mark.parametrize("key", ["ssl_crt", "ssl_key", "ssl_chain"])
def test_tls_file_missing(tmp_path: Path, key: str) -> None:
    existing = tmp_path / "exists.pem"
    existing.write_text("placeholder\n")
    values = {"ssl_crt": existing, "ssl_key": existing, "ssl_chain": existing, key: tmp_path / "gone:dir" / "x.pem"}
    block = "".join(f"  {k}: '{v}'\n" for k, v in values.items())
    message = load_error(tmp_path, {"master": f"rest_tornado:\n  port: 8000\n{block}"})
    assert message == f"{tmp_path / 'master'}: rest_tornado: {key}: {values[key]} does not exist"


def test_tls_files_not_checked_with_disable_ssl_or_endpoints(tmp_path: Path) -> None:
    files = {"master": GOOD + "  ssl_crt: /nonexistent.pem\n"}
    assert load(tmp_path, files).ssl_crt == "/nonexistent.pem"
    config = load(tmp_path, {"master": "rest_tornado:\n  endpoints: [unix:/run/a.sock]\n"})
    assert (config.port, config.endpoints, config.tls) == (0, ("unix:/run/a.sock",), True)


def test_tls_config_loads(tmp_path: Path) -> None:
    crt = tmp_path / "c r:t.pem"
    crt.write_text("placeholder\n")
    config = load(
        tmp_path, {"master": f"netapi_enable_clients: [local]\nrest_tornado:\n  port: 8443\n  ssl_crt: '{crt}'\n"}
    )
    assert (config.tls, config.ssl_crt, config.ssl_key) == (True, str(crt), None)
    assert config.warnings == ()


# --------------------------------------------------------------------------
# Warnings


def _warning(config: ApiConfig, text: str) -> str:
    matching = [w for w in config.warnings if text in w]
    assert len(matching) == 1, config.warnings
    assert "\n" not in matching[0]
    return matching[0]


def test_misspelt_key_warns_and_never_weakens(tmp_path: Path) -> None:
    """Checklist G6."""
    config = load(tmp_path, {"master": GOOD + "  webhook_disable_auht: true\n"})
    assert config.webhook_disable_auth is False
    warning = _warning(config, "unknown key")
    assert warning == f"{tmp_path / 'master'}: rest_tornado: unknown key 'webhook_disable_auht' ignored"


def test_missing_netapi_enable_clients_warns(tmp_path: Path) -> None:
    """Checklist G5."""
    config = load(tmp_path, {"master": GOOD.replace("netapi_enable_clients: [local, runner]\n", "")})
    assert config.master.netapi_enable_clients is None
    assert config.master.enabled_clients == ()
    assert "every client is disabled" in _warning(config, "netapi_enable_clients is not set")


def test_empty_netapi_enable_clients_does_not_warn(tmp_path: Path) -> None:
    config = load(tmp_path, {"master": GOOD.replace("[local, runner]", "[]")})
    assert config.master.enabled_clients == () and config.warnings == ()


def test_ssh_client_warns(tmp_path: Path) -> None:
    config = load(tmp_path, {"master": GOOD.replace("[local, runner]", "[local, ssh]")})
    _warning(config, "the ssh client is not offered")


@pytest.mark.parametrize(
    ("address_line", "warned"),
    [
        ("", True),
        ("  address: 0.0.0.0\n", True),
        ("  address: '::'\n", True),
        ("  address: 10.0.0.5\n", True),
        ("  address: 127.0.0.1\n", False),
        ("  address: 127.1.2.3\n", False),
        ("  address: '::1'\n", False),
    ],
)
def test_plain_http_beyond_loopback_warns(tmp_path: Path, address_line: str, warned: bool) -> None:
    """Checklist G1."""
    text = "netapi_enable_clients: [local]\nrest_tornado:\n  port: 8000\n  disable_ssl: true\n" + address_line
    config = load(tmp_path, {"master": text})
    found = [w for w in config.warnings if "disable_ssl is on" in w]
    assert len(found) == (1 if warned else 0), config.warnings


def test_other_warnings(tmp_path: Path) -> None:
    config = load(tmp_path, {"master": GOOD + "  num_processes: 4\n  cors_origin: '*'\n  websockets: true\n"})
    _warning(config, "num_processes is not supported")
    _warning(config, "cors_origin '*' with websockets")
    assert len(config.warnings) == 2


# --------------------------------------------------------------------------
# Properties


@settings(max_examples=200, deadline=None)
@given(port=st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=12), st.floats(), st.booleans(), st.none()))
def test_port_property(tmp_path_factory: pytest.TempPathFactory, port: Any) -> None:
    root = tmp_path_factory.mktemp("prop")
    text = "rest_tornado:\n  disable_ssl: true\n  port: " + json.dumps(port, allow_nan=True) + "\n"
    text = text.replace("NaN", ".nan").replace("-Infinity", "-.inf").replace("Infinity", ".inf")
    try:
        config = load(root, {"master": text})
    except ConfigError as exc:
        assert "\n" not in str(exc)
        assert str(exc).startswith(str(root / "master") + ": ")
    else:
        assert 1 <= config.port <= 65535
        assert isinstance(port, (int, str)) and not isinstance(port, bool)
        assert config.port == int(port)


@settings(max_examples=200, deadline=None)
@given(address=st.one_of(st.ip_addresses().map(str), st.text(max_size=40)))
def test_address_property(tmp_path_factory: pytest.TempPathFactory, address: str) -> None:
    import ipaddress

    root = tmp_path_factory.mktemp("prop")
    text = "rest_tornado:\n  disable_ssl: true\n  port: 1\n  address: " + json.dumps(address) + "\n"
    try:
        ipaddress.ip_address(address)
        valid = True
    except ValueError:
        valid = address == ""
    try:
        config = load(root, {"master": text})
    except ConfigError as exc:
        assert not valid
        assert "\n" not in str(exc)
    else:
        assert valid
        assert config.address == (address or None)


# --------------------------------------------------------------------------
# Compatibility with Salt's own reader


SALT_CASES: dict[str, dict[str, str]] = {
    "plain": {"master": GOOD},
    "master-d-merge": {
        "master": "id: m\nroot_dir: {tmp}/root\n"
        "rest_tornado: {port: 8000, debug: true}\nnetapi_enable_clients: [local]\n",
        "master.d/10-a.conf": "rest_tornado: {port: 9000, disable_ssl: true}\nnetapi_enable_clients: [runner]\n",
        "master.d/20-b.conf": "rest_tornado: {websockets: true}\nnetapi_enable_clients: [local, wheel]\n",
    },
    "include-after-master-d": {
        "master": "id: m\ninclude: [extra/*.conf]\nsock_dir: /run/salt\n",
        "master.d/a.conf": "rest_tornado: {port: 1, debug: true}\n",
        "extra/b.conf": "rest_tornado: {port: 2}\ninclude: deeper/c.conf\n",
        "extra/deeper/c.conf": "rest_tornado: {port: 3, disable_ssl: true}\nhash_type: sha512\n",
    },
    "root-dir-sock-dir": {
        "master": "id: m\nroot_dir: {tmp}/r\nsock_dir: {tmp}/r/s\nrest_twisted: {port: 1, disable_ssl: true}\n"
    },
    "long-sock-dir": {
        "master": "id: m\ncachedir: /c\nsock_dir: /a/long/long/socket/dir\nrest_tornado: {port: 1, disable_ssl: true}\n"
    },
    "octal-looking": {
        "master": "id: m\nrest_tornado: {port: 0755, backlog: 010, disable_ssl: true}\nret_port: 04506\n"
    },
    "merge-key": {
        "master": "id: m\nb: &b {port: 1, debug: true, disable_ssl: true}\nrest_tornado: {<<: *b, port: 2}\n"
    },
}


@pytest.mark.skipif(importlib.util.find_spec("salt") is None, reason="Salt is not installed")
def test_reads_like_salt(tmp_path: Path) -> None:
    keys = ("rest_tornado", "rest_twisted", "netapi_enable_clients", "ret_port", "hash_type", "sock_dir")
    ours: dict[str, dict[str, Any]] = {}
    paths = {}
    for name, files in SALT_CASES.items():
        root = tmp_path / name
        master = write_tree(root, {k: v.replace("{tmp}", str(root)) for k, v in files.items()})
        paths[name] = str(master)
        options, _origin = read_master_config(str(master))
        master_settings = load_config(str(master)).master
        ours[name] = {k: options[k] for k in keys[:2] if k in options}
        ours[name]["netapi_enable_clients"] = list(master_settings.netapi_enable_clients or [])  # Salt: [] if unset
        ours[name]["ret_port"] = master_settings.ret_port
        ours[name]["hash_type"] = master_settings.hash_type
        ours[name]["sock_dir"] = master_settings.sock_dir
    script = textwrap.dedent(
        """
        import json, sys
        import salt.config
        result = {}
        for name, path in json.loads(sys.argv[1]).items():
            opts = salt.config.master_config(path)
            result[name] = {k: opts.get(k) for k in json.loads(sys.argv[2])}
        print(json.dumps(result))
        """
    )
    env = dict(os.environ, HOME=str(tmp_path))
    completed = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths), json.dumps(keys)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    theirs = json.loads(completed.stdout.strip().splitlines()[-1])
    for name in SALT_CASES:
        salt_view = theirs[name]
        for key, value in ours[name].items():
            assert value == salt_view[key], (name, key, value, salt_view[key])
        for key in ("rest_tornado", "rest_twisted", "netapi_enable_clients"):
            if salt_view.get(key) and key not in ours[name]:
                pytest.fail(f"{name}: Salt sees {key} and we do not")


def test_implemented_clients_are_known() -> None:
    assert "ssh" not in IMPLEMENTED_CLIENTS
    assert set(HASH_HEX_LENGTH) == {"md5", "sha1", "sha224", "sha256", "sha384", "sha512"}


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("4", 4), ("64", 64)])
def test_processes_accepted(tmp_path: Path, value: str, expected: int) -> None:
    assert load(tmp_path, {"master": GOOD + f"  processes: {value}\n"}).processes == expected


@pytest.mark.parametrize("value", ["0", "65", "-1", "two", "1.5", "true"])
def test_processes_refused(tmp_path: Path, value: str) -> None:
    assert "processes" in load_error(tmp_path, {"master": GOOD + f"  processes: {value}\n"})


@pytest.mark.parametrize("value", ["[10.0.0.0/8, '::1']", "10.0.0.5"])
def test_trusted_proxies_accepted(tmp_path: Path, value: str) -> None:
    assert load(tmp_path, {"master": GOOD + f"  trusted_proxies: {value}\n"}).trusted_proxies


@pytest.mark.parametrize("value", ["[proxy.example]", "['10.0.0.0/33']", "{a: 1}"])
def test_trusted_proxies_refused(tmp_path: Path, value: str) -> None:
    assert "trusted_proxies" in load_error(tmp_path, {"master": GOOD + f"  trusted_proxies: {value}\n"})
