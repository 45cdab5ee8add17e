"""Read the Salt master configuration and the API's block in it.

The master config is read the way Salt reads it for the keys this service
uses: YAML through ``safe_load``, the ``default_include`` glob (by default
``master.d/*.conf``, relative to the config file's directory) and any
``include:`` entries, later files overriding earlier ones key by key.

The API block is ``rest_twisted:`` if present, else ``rest_tornado:`` so an
existing master configuration works unchanged.

Every problem is a :class:`ConfigError` whose text names the file, the key
and what is wrong, in one line.
"""

from __future__ import annotations

import glob
import ipaddress
import math
import re
import os
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import yaml

#: The keys of ``hash_type`` and the hex length of their digests.
HASH_HEX_LENGTH = {
    "md5": 32,
    "sha1": 40,
    "sha224": 56,
    "sha256": 64,
    "sha384": 96,
    "sha512": 128,
}

#: Clients the service implements, in the order ``GET /`` lists them.
IMPLEMENTED_CLIENTS = (
    "local",
    "local_async",
    "local_batch",
    "local_subset",
    "runner",
    "runner_async",
    "wheel",
    "wheel_async",
)

BLOCK_NAMES = ("rest_twisted", "rest_tornado")


class ConfigError(Exception):
    """A configuration problem, described in one line."""


# --------------------------------------------------------------------------
# The API block: every key, its type check and its default.


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1"):
        return True
    if isinstance(value, str) and value.lower() in ("false", "no", "off", "0", ""):
        return False
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueError("must be true or false")


def _int_range(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be a whole number from {low} to {high}")
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            value = int(value.strip())
        if not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"must be a whole number from {low} to {high}")
        return value

    return check


def _seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number of seconds") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _positive_seconds(value: Any) -> float:
    number = _seconds(value)
    if number <= 0:
        raise ValueError("must be a number of seconds above 0")
    return number


def _optional_str(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _address(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError("must be an IP address")
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def _origins(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError('must be "*", one origin or a list of origins')


def _str_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("must be a list of strings")


def _networks(value: Any) -> tuple[str, ...]:
    entries = _str_list(value)
    for entry in entries:
        try:
            ipaddress.ip_network(entry.strip(), strict=False)
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)") from None
    return entries


def _choice(*choices: str) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in choices:
            raise ValueError("must be one of " + ", ".join(choices))
        return str(value)

    return check


def _jobs_format(value: Any) -> str:
    return _choice("tornado", "cherrypy")(value)


def _log_format(value: Any) -> str:
    return _choice("text", "json")(value)


def _tls_version(value: Any) -> str:
    return _choice("TLSv1.2", "TLSv1.3")(value)


def _samesite(value: Any) -> str:
    return _choice("Strict", "Lax")(value)


def _url_segment(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"/[A-Za-z0-9._~-]+", value):
        raise ValueError("must be one path segment such as /static")
    return value


#: block key -> (attribute, checker, default). ``port`` has no default.
_BLOCK_KEYS: dict[str, tuple[str, Callable[[Any], Any], Any]] = {
    "port": ("port", _int_range(1, 65535), None),
    "address": ("address", _address, None),
    "host": ("address", _address, None),
    "backlog": ("backlog", _int_range(1, 65535), 128),
    "ssl_crt": ("ssl_crt", _optional_str, None),
    "ssl_key": ("ssl_key", _optional_str, None),
    "ssl_chain": ("ssl_chain", _optional_str, None),
    "ssl_ciphers": ("ssl_ciphers", _optional_str, "ECDHE+AESGCM:ECDHE+CHACHA20"),
    "ssl_min_version": ("ssl_min_version", _tls_version, "TLSv1.2"),
    "disable_ssl": ("disable_ssl", _bool, False),
    "debug": ("debug", _bool, False),
    "num_processes": ("num_processes", _int_range(0, 1024), 1),
    "processes": ("processes", _int_range(1, 64), 1),
    "websockets": ("websockets", _bool, False),
    "cors_origin": ("cors_origin", _origins, ()),
    "webhook_disable_auth": ("webhook_disable_auth", _bool, False),
    "endpoints": ("endpoints", _str_list, ()),
    "max_request_body_size": ("max_request_body_size", _int_range(1, 2**31), 1048576),
    "max_form_fields": ("max_form_fields", _int_range(1, 10**6), 1000),
    "max_chunks": ("max_chunks", _int_range(1, 10**5), 100),
    "max_json_depth": ("max_json_depth", _int_range(2, 1000), 64),
    "max_tgt_length": ("max_tgt_length", _int_range(1, 2**24), 65536),
    "request_header_timeout": ("request_header_timeout", _positive_seconds, 30.0),
    "request_body_timeout": ("request_body_timeout", _positive_seconds, 60.0),
    "master_request_timeout": ("master_request_timeout", _positive_seconds, 30.0),
    "master_pool_size": ("master_pool_size", _int_range(1, 256), 8),
    "max_concurrent_publishes": ("max_concurrent_publishes", _int_range(1, 10**5), 64),
    "sync_wait_max": ("sync_wait_max", _positive_seconds, 3600.0),
    "max_connections": ("max_connections", _int_range(1, 10**7), 10000),
    "max_connections_per_ip": ("max_connections_per_ip", _int_range(0, 10**7), 1000),
    "login_rate_limit": ("login_rate_limit", _int_range(0, 10**6), 10),
    "webhook_rate_limit": ("webhook_rate_limit", _int_range(0, 10**6), 20),
    "events_keepalive": ("events_keepalive", _seconds, 15.0),
    "events_replay_buffer": ("events_replay_buffer", _int_range(0, 10**6), 1000),
    "events_queue_max": ("events_queue_max", _int_range(1, 10**7), 1000),
    "ws_max_message_size": ("ws_max_message_size", _int_range(1, 2**30), 65536),
    "ws_ping_interval": ("ws_ping_interval", _seconds, 30.0),
    "stats_disable_auth": ("stats_disable_auth", _bool, False),
    "metrics_disable_auth": ("metrics_disable_auth", _bool, False),
    "metrics": ("metrics", _bool, False),
    "trusted_proxies": ("trusted_proxies", _networks, ()),
    "cookie_samesite": ("cookie_samesite", _samesite, "Strict"),
    "salt_version_header": ("salt_version_header", _optional_str, None),
    "salt_version": ("salt_version_header", _optional_str, None),
    "jobs_format": ("jobs_format", _jobs_format, "tornado"),
    "log_format": ("log_format", _log_format, "text"),
    "token_cache_seconds": ("token_cache_seconds", _seconds, 5.0),
    "static": ("static", _optional_str, None),
    "static_path": ("static_path", _url_segment, "/static"),
    "app": ("app", _optional_str, None),
    "app_path": ("app_path", _url_segment, "/app"),
}


@dataclass(frozen=True)
class MasterSettings:
    """The master options the service reads (Salt's defaults where unset)."""

    config_file: str = "/etc/salt/master"
    sock_dir: str = "/var/run/salt/master"
    ret_port: int = 4506
    interface: str = "0.0.0.0"  # noqa: S104 - the master's own default; we connect, not bind  # nosec B104
    ipc_mode: str = "ipc"
    tcp_master_pub_port: int = 4512
    tcp_master_pull_port: int = 4513
    hash_type: str = "sha256"
    token_expire: float = 43200.0
    timeout: float = 5.0
    gather_job_timeout: float = 10.0
    rest_timeout: float = 300.0
    order_masters: bool = False
    syndic_wait: float = 5.0
    external_auth: dict[str, Any] = field(default_factory=dict)
    netapi_enable_clients: tuple[str, ...] | None = None

    @property
    def token_length(self) -> int:
        """The hex length of a token under this master's ``hash_type``."""
        return HASH_HEX_LENGTH.get(self.hash_type, 64)

    @property
    def request_address(self) -> str:
        """The ZeroMQ address of the master's request server."""
        host = self.interface
        if host in ("0.0.0.0", ""):  # noqa: S104 - a master on all interfaces is reached on loopback  # nosec B104
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"tcp://{host}:{self.ret_port}"

    @property
    def enabled_clients(self) -> tuple[str, ...]:
        """Implemented clients the master config enables, in ``GET /`` order."""
        enabled = set(self.netapi_enable_clients or ())
        return tuple(c for c in IMPLEMENTED_CLIENTS if c in enabled)


@dataclass(frozen=True)
class ApiConfig:
    """The API block, checked and with every default filled in."""

    master: MasterSettings
    block_name: str
    port: int
    address: str | None = None
    backlog: int = 128
    ssl_crt: str | None = None
    ssl_key: str | None = None
    ssl_chain: str | None = None
    ssl_ciphers: str = "ECDHE+AESGCM:ECDHE+CHACHA20"
    ssl_min_version: str = "TLSv1.2"
    disable_ssl: bool = False
    debug: bool = False
    num_processes: int = 1
    processes: int = 1
    websockets: bool = False
    cors_origin: tuple[str, ...] = ()
    webhook_disable_auth: bool = False
    endpoints: tuple[str, ...] = ()
    max_request_body_size: int = 1048576
    max_form_fields: int = 1000
    max_chunks: int = 100
    max_json_depth: int = 64
    max_tgt_length: int = 65536
    request_header_timeout: float = 30.0
    request_body_timeout: float = 60.0
    master_request_timeout: float = 30.0
    master_pool_size: int = 8
    max_concurrent_publishes: int = 64
    sync_wait_max: float = 3600.0
    max_connections: int = 10000
    max_connections_per_ip: int = 1000
    login_rate_limit: int = 10
    webhook_rate_limit: int = 20
    events_keepalive: float = 15.0
    events_replay_buffer: int = 1000
    events_queue_max: int = 1000
    ws_max_message_size: int = 65536
    ws_ping_interval: float = 30.0
    stats_disable_auth: bool = False
    metrics_disable_auth: bool = False
    metrics: bool = False
    trusted_proxies: tuple[str, ...] = ()
    cookie_samesite: str = "Strict"
    salt_version_header: str | None = None
    jobs_format: str = "tornado"
    log_format: str = "text"
    token_cache_seconds: float = 5.0
    static: str | None = None
    static_path: str = "/static"
    app: str | None = None
    app_path: str = "/app"
    warnings: tuple[str, ...] = ()

    @property
    def tls(self) -> bool:
        """Whether the configured listeners speak TLS."""
        return not self.disable_ssl


# --------------------------------------------------------------------------
# Reading files.


def resolve_config_path(path: str) -> str:
    """Salt's ``-c``: a directory means ``<dir>/master``."""
    if os.path.isdir(path):
        return os.path.join(path, "master")
    return path


class _UniqueKeyLoader(yaml.SafeLoader):
    """``safe_load`` semantics, read the way Salt's ``SaltYamlSafeLoader`` reads.

    * a key repeated in one mapping is an error ("found conflicting ID"), so
      two ``rest_tornado:`` blocks never silently shadow each other;
    * ``<<`` merge keys never override a key written in the mapping itself;
    * integers with leading zeros are decimal (``0755`` is 755, not octal);
    * timestamps stay strings.

    Nothing but plain YAML types is constructed (no ``!!python/*`` tags).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):
            raise yaml.constructor.ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found unacceptable key",
                    key_node.start_mark,
                ) from None
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found conflicting ID {key!r}",
                    key_node.start_mark,
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Apply ``<<`` merge keys; as in Salt, an explicit key beats a merged one."""
        explicit = sum(1 for key_node, _ in node.value if key_node.tag != "tag:yaml.org,2002:merge")
        super().flatten_mapping(node)
        merged, own = node.value[: len(node.value) - explicit], node.value[len(node.value) - explicit :]
        own_keys = {key_node.value for key_node, _ in own}
        node.value = [pair for pair in merged if pair[0].value not in own_keys] + own

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """Salt strips leading zeros: ``0755`` is 755, not octal 493."""
        value = node.value
        if value != "0" and value.startswith("0") and not value.startswith(("0b", "0x")):
            node = yaml.ScalarNode(node.tag, value.lstrip("0") or "0", node.start_mark, node.end_mark)
        return int(super().construct_yaml_int(node))

    def construct_timestamp_as_str(self, node: yaml.ScalarNode) -> str:
        """Salt keeps ``2024-01-01`` a string, not a date."""
        return str(self.construct_scalar(node))


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _UniqueKeyLoader.construct_yaml_int)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:timestamp", _UniqueKeyLoader.construct_timestamp_as_str)


def _load_yaml_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            data = yaml.load(handle, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass  # nosec B506
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{path}: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of options")
    return data


def _include_list(path: str, key: str, value: Any) -> list[str]:
    """An ``include``/``default_include`` value as a list of globs (Salt accepts both)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(i, str) for i in value):
        return value
    raise ConfigError(f"{path}: {key}: must be a path or a list of paths")


def _merge(dest: dict[str, Any], upd: dict[str, Any]) -> None:
    """Salt's ``dictupdate.update(dest, upd, True, True)``: mappings merged, lists joined."""
    for key, value in upd.items():
        current = dest.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            merged = dict(current)
            _merge(merged, value)
            dest[key] = merged
        elif isinstance(current, list) and isinstance(value, list):
            dest[key] = current + [v for v in value if v not in current]
        else:
            dest[key] = value


#: Nested ``include:`` levels followed before giving up (a loop, surely).
_MAX_INCLUDE_DEPTH = 16


def _read_includes(
    patterns: list[str], including: str, key: str, strict: bool, origin: dict[str, str], depth: int
) -> dict[str, Any]:
    """Salt's ``include_config``: the files matching *patterns*, merged in order.

    Each file's own ``include:`` is read relative to it and overrides it. Later
    files are merged into earlier ones (mappings recursively, lists joined).

    :param strict: refuse a pattern without wildcards that names no file (Salt
        only warns; a typo here usually means a missing block).
    """
    if depth > _MAX_INCLUDE_DEPTH:
        raise ConfigError(f"{including}: include: nested more than {_MAX_INCLUDE_DEPTH} levels deep (a loop?)")
    base_dir = os.path.dirname(os.path.abspath(including))
    merged: dict[str, Any] = {}
    for pattern in patterns:
        full = os.path.expanduser(pattern)
        if not os.path.isabs(full):
            full = os.path.join(base_dir, full)
        matched = sorted(glob.glob(full))
        if not matched and strict and not any(ch in pattern for ch in "*?["):
            raise ConfigError(f"{including}: {key}: {pattern} does not exist")
        for extra in matched:
            extra_options = _load_yaml_file(extra)
            extra_origin = {k: extra for k in extra_options}
            nested = _include_list(extra, "include", extra_options.get("include"))
            if nested:
                nested_options = _read_includes(nested, extra, "include", strict, extra_origin, depth + 1)
                extra_options.update(nested_options)
            _merge(merged, extra_options)
            origin.update(extra_origin)
    return merged


def read_master_config(path: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Read the master config with its includes, as Salt's ``master_config`` does.

    The ``default_include`` files (``master.d/*.conf`` unless set) and then the
    ``include`` files, relative to the config file's directory, override the
    main file key by key; among themselves, included files are merged (mappings
    recursively, lists joined), and each may ``include:`` more files.

    :returns: the merged options and, per top-level key, the file that set it
        (for merged keys, the last file that contributed).
    """
    path = resolve_config_path(path)
    options = _load_yaml_file(path)
    origin = {key: path for key in options}

    default_include = _include_list(path, "default_include", options.get("default_include", "master.d/*.conf"))
    include = _include_list(path, "include", options.get("include"))

    include_origin: dict[str, str] = {}
    options.update(_read_includes(default_include, path, "default_include", False, include_origin, 1))
    origin.update(include_origin)
    include_origin = {}
    options.update(_read_includes(include, path, "include", True, include_origin, 1))
    origin.update(include_origin)
    return options, origin


def _salt_sock_dir(options: dict[str, Any], where: Callable[[str], str]) -> str:
    """``sock_dir`` as Salt's ``apply_master_config`` computes it (POSIX).

    A ``sock_dir`` more than 10 characters longer than ``cachedir`` becomes
    ``<cachedir>/.salt-unix``; then ``root_dir`` is prepended unless the path
    already lies under it.
    """
    values = {}
    for key, default in (
        ("sock_dir", MasterSettings.sock_dir),
        ("cachedir", "/var/cache/salt/master"),
        ("root_dir", "/"),
    ):
        value = options.get(key)
        if value is None or value == "":
            value = default
        if not isinstance(value, str):
            raise ConfigError(f"{where(key)}: {key}: must be a path")
        values[key] = value
    sock_dir = values["sock_dir"]
    if len(sock_dir) > len(values["cachedir"]) + 10:
        sock_dir = os.path.join(values["cachedir"], ".salt-unix")
    root_dir = os.path.abspath(values["root_dir"])
    under_root = root_dir != "/" and (sock_dir == root_dir or sock_dir.startswith(root_dir + os.sep))
    if under_root:
        sock_dir = sock_dir[len(root_dir) :]
    return os.path.normpath(os.path.join(root_dir, os.path.normpath(sock_dir).lstrip(os.sep)))


# --------------------------------------------------------------------------
# Building the settings.


def _master_settings(path: str, options: dict[str, Any], origin: dict[str, str]) -> MasterSettings:
    values: dict[str, Any] = {"config_file": path}

    def where(key: str) -> str:
        return origin.get(key, path)

    def take(key: str, check: Callable[[Any], Any]) -> None:
        if key in options and options[key] is not None:
            try:
                values[key] = check(options[key])
            except ValueError as exc:
                raise ConfigError(f"{where(key)}: {key}: {exc}") from None

    values["sock_dir"] = _salt_sock_dir(options, where)
    take("ret_port", _int_range(1, 65535))
    take("interface", lambda v: _address(v) or "0.0.0.0")  # noqa: S104 - the master's, not bound here  # nosec B104
    take("ipc_mode", _choice("ipc", "tcp"))
    take("tcp_master_pub_port", _int_range(1, 65535))
    take("tcp_master_pull_port", _int_range(1, 65535))
    take("hash_type", _choice(*HASH_HEX_LENGTH))
    take("token_expire", _positive_seconds)
    take("timeout", _positive_seconds)
    take("gather_job_timeout", _positive_seconds)
    take("rest_timeout", _positive_seconds)
    take("order_masters", _bool)
    take("syndic_wait", _seconds)

    eauth = options.get("external_auth")
    if eauth is not None:
        if not isinstance(eauth, dict):
            raise ConfigError(f"{where('external_auth')}: external_auth: must be a mapping")
        values["external_auth"] = eauth
    if "netapi_enable_clients" in options:
        clients = options["netapi_enable_clients"]
        if clients is None:
            clients = []
        if not isinstance(clients, list) or not all(isinstance(c, str) for c in clients):
            raise ConfigError(
                f"{where('netapi_enable_clients')}: netapi_enable_clients: must be a list of client names"
            )
        values["netapi_enable_clients"] = tuple(clients)
    return MasterSettings(**values)


def load_config(path: str, section: str | None = None) -> ApiConfig:
    """Read the master config at *path* and return the checked API block.

    :param path: the master config file, or the directory holding ``master``.
    :param section: the block to use; by default ``rest_twisted``, else
        ``rest_tornado``.
    :raises ConfigError: with a one-line reason.
    """
    path = resolve_config_path(path)
    options, origin = read_master_config(path)
    master = _master_settings(path, options, origin)

    names = (section,) if section else BLOCK_NAMES
    block_name = next((n for n in names if n in options), None)
    if block_name is None:
        raise ConfigError(f"{path}: no {' or '.join(names)} block: the API has nothing to listen on")
    block = options[block_name]
    where = origin.get(block_name, path)
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: {block_name}: must be a mapping of API options")

    values: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in block.items():
        if key not in _BLOCK_KEYS:
            warnings.append(f"{where}: {block_name}: unknown key {key!r} ignored")
            continue
        attribute, check, _default = _BLOCK_KEYS[key]
        if value is None and key != "port":
            continue
        try:
            values[attribute] = check(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: {block_name}: {key}: {exc}") from None

    if "port" not in values and not values.get("endpoints"):
        raise ConfigError(f"{where}: {block_name}: port: missing (a port from 1 to 65535 is required)")
    values.setdefault("port", 0)

    if not values.get("disable_ssl") and not values.get("endpoints"):
        crt = values.get("ssl_crt")
        if not crt:
            raise ConfigError(
                f"{where}: {block_name}: ssl_crt: missing; set ssl_crt (and ssl_key) or disable_ssl: True"
            )
        for key in ("ssl_crt", "ssl_key", "ssl_chain"):
            file_path = values.get(key)
            if file_path and not os.access(file_path, os.R_OK):
                reason = "does not exist" if not os.path.exists(file_path) else "is not readable"
                raise ConfigError(f"{where}: {block_name}: {key}: {file_path} {reason}")

    if values.get("num_processes", 1) not in (1,):
        warnings.append(
            f"{where}: {block_name}: num_processes is not supported; running one process "
            "(processes: N starts N workers)"
        )
    if master.netapi_enable_clients is None:
        warnings.append(
            f"{path}: netapi_enable_clients is not set: every client is disabled "
            "(add e.g. [local, local_async, runner] to enable them)"
        )
    elif "ssh" in master.netapi_enable_clients:
        warnings.append(f"{path}: netapi_enable_clients: the ssh client is not offered by this API")
    if values.get("disable_ssl"):
        address = values.get("address")
        loopback = address is not None and ipaddress.ip_address(address).is_loopback
        if not loopback:
            warnings.append(
                f"{where}: {block_name}: disable_ssl is on and the API listens beyond loopback: "
                "tokens and passwords cross the network in clear text"
            )
    if values.get("cors_origin") == ("*",) and values.get("websockets"):
        warnings.append(
            f"{where}: {block_name}: cors_origin '*' with websockets: any site may open token-path "
            "websockets; cookie-authenticated /ws stays same-origin"
        )
    return ApiConfig(master=master, block_name=block_name, warnings=tuple(warnings), **values)
