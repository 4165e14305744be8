"""Reads agent.toml into frozen config values; a bad file gets one ConfigError naming key and line.

The schema is agent.toml.example: every key there, with the defaults in model.py.
``parse_config`` / ``load_config`` never raise anything but ConfigError, whatever the input
(fuzzed in tests/test_config.py); the CLI prints ``str(error)`` and exits with EX_CONFIG.
Runs on Python 3.6 (attrs 22.2, tomli 1.2.3).

The package, in dependency order (each module imports only from those before it;
render and inventory only from messages and model):

- messages: how values, keys and OS errors are shown in one-line config messages.
- model: the config values (frozen attrs classes), ConfigError, and the schema of agent.toml.
- locate: finds the line of a key in TOML text, and turns TOML syntax errors into ConfigError.
- checker: walks decoded TOML in schema order: types, unknown keys, paths, durations.
- netcheck: checks the network values: binding addresses and networks, route gateways.
- validate: checks the decoded file section by section into a Config.
- load: reads agent.toml (bytes, text or a path) into a validated Config.
- render: writes TOML: strings, values and a whole agent.toml for a Config.
- inventory: reads /etc/xensource-inventory and picks the management bridge.
- readfile: reads the files a config names safely (bounded, non-blocking, regular files
  only) and judges the directories of [files].
"""

from agent.config.inventory import management_bridge, read_inventory
from agent.config.load import decode_text, default_config, load_config, parse_config
from agent.config.locate import locate_key, scan_keys, toml_syntax_error
from agent.config.messages import dotted
from agent.config.model import (ARRAY_SECTIONS, BOOL, BOUNDS, ENABLE_HOST_CHOICES, EX_CONFIG, INT,
                                INTS, MAX_ADDRESSES, MAX_BINDINGS, MAX_LABEL, MAX_PROBES,
                                MAX_SECONDS, MAX_SRS, MAX_STRING, MAX_TRACE_BYTES, MAX_VMS,
                                MIN_TRACE_BYTES, NUM, PROBE_MODES, SCHEMA, STR, STRS, Binding,
                                Config, ConfigError, FilesConfig, MaintenanceConfig,
                                ManagementConfig, RouteConfig, SrConfig, TimingConfig, XapiConfig)
from agent.config.netcheck import parse_ip
from agent.config.readfile import MAX_CONFIG_BYTES, read_config_bytes, unsafe_directory
from agent.config.render import render_config, toml_string, toml_value

__all__ = [  # every public name, and the private ones used outside agent/config/
    "EX_CONFIG", "ENABLE_HOST_CHOICES", "PROBE_MODES", "MAX_SECONDS", "MIN_TRACE_BYTES",
    "MAX_TRACE_BYTES", "BOUNDS", "MAX_ADDRESSES", "MAX_BINDINGS", "MAX_PROBES", "MAX_SRS",
    "MAX_VMS", "MAX_STRING", "MAX_LABEL", "ConfigError", "XapiConfig", "Binding", "RouteConfig",
    "ManagementConfig", "SrConfig", "MaintenanceConfig", "TimingConfig", "FilesConfig", "Config",
    "BOOL", "INT", "NUM", "STR", "STRS", "INTS", "SCHEMA", "ARRAY_SECTIONS", "dotted", "parse_ip",
    "scan_keys", "locate_key", "toml_syntax_error", "decode_text", "parse_config", "load_config",
    "default_config", "read_inventory", "management_bridge", "toml_string", "toml_value",
    "render_config", "MAX_CONFIG_BYTES", "read_config_bytes", "unsafe_directory",
]
