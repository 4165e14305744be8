"""Reads agent.toml (bytes, text or a path) into a validated Config."""

from agent.config.readfile import read_config_bytes

try:
    import tomllib
except ImportError:  # Python < 3.11 (dom0: 3.6 with tomli 1.2.3)
    import tomli as tomllib

from agent.config.checker import _Checker
from agent.config.locate import toml_syntax_error
from agent.config.model import Binding, Config, ConfigError, RouteConfig, SrConfig
from agent.config.validate import _check


# --- entry points --------------------------------------------------------------------------------

def decode_text(data, path):
    """UTF-8 text of ``data`` without a BOM; ConfigError with the line of the first bad byte."""
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    if not isinstance(data, (bytes, bytearray)):
        raise ConfigError("expected text, got %s" % type(data).__name__, path=path)
    try:
        return decode_text(bytes(data).decode("utf-8"), path)
    except UnicodeDecodeError as exc:
        head = bytes(data)[:exc.start]
        line = head.count(b"\n") + 1
        column = exc.start - (head.rfind(b"\n") + 1) + 1
        raise ConfigError("the file is not UTF-8 (byte 0x%02x at column %d); save it as UTF-8"
                          % (bytearray(data)[exc.start], column), line=line, path=path) from None


def parse_config(text, path="<string>"):
    """A validated Config from TOML ``text`` (str or bytes); ConfigError for anything wrong."""
    try:
        text = decode_text(text, path)
        try:
            top = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise toml_syntax_error(exc, text, path) from None
        except RecursionError:
            raise ConfigError("TOML syntax: lists or tables nest too deeply; flatten them",
                              path=path) from None
        return _check(top, _Checker(text, path))
    except ConfigError:
        raise
    except Exception as exc:  # the contract: nothing but ConfigError escapes (fuzzed)
        raise ConfigError("internal error while checking the file (%s: %s); please report it "
                          "with the file" % (type(exc).__name__, exc), path=path) from exc


def load_config(path):
    """parse_config of the file at ``path``; a missing, unreadable, irregular or too large
    file is a ConfigError (read_config_bytes)."""
    return parse_config(read_config_bytes(path), str(path))


def default_config():
    """The Config of agent.toml.example: defaults plus its sample binding, gateways and SR."""
    return Config(
        bindings=[Binding("sspn", ["pfsense"], ["192.0.2.2/24", "2001:db8:1::2/64"])],
        route=RouteConfig("192.0.2.1", "2001:db8:1::1"),
        srs=[SrConfig("5f8c0a36-3c4e-4a4e-9a52-6d1b7c1f0a01")])
