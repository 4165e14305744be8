"""Reads /etc/xensource-inventory and picks the management bridge."""

from agent.config.readfile import read_config_bytes

from agent.config.messages import _show
from agent.config.model import _IFNAME, ConfigError


def read_inventory(path="/etc/xensource-inventory"):
    """The KEY='value' lines of /etc/xensource-inventory as a dict (docs/xapi-behaviour.md §11)."""
    try:  # bounded, never blocking: SIGHUP reads it on the decision thread
        text = read_config_bytes(path, what="the inventory").decode("utf-8", "replace")
    except ConfigError as exc:
        raise ConfigError("cannot read %s (%s); fix management.inventory or set "
                          "management.bridge" % (path, exc.message),
                          key="management.inventory") from None
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]  # inventory.ml writes %s='%s'; the parser strips the quotes
        out[key.strip()] = value
    return out


def management_bridge(config):
    """management.bridge, else MANAGEMENT_INTERFACE of the inventory; ConfigError if neither."""
    if config.management.bridge:
        return config.management.bridge
    inventory = config.management.inventory
    bridge = read_inventory(inventory).get("MANAGEMENT_INTERFACE", "")
    if not bridge:
        raise ConfigError("is empty and %s has no MANAGEMENT_INTERFACE (management is disabled "
                          'on this host); set management.bridge = "xenbr0" (the bridge XAPI '
                          "uses) or management.mirror = false" % inventory,
                          key="management.bridge", path=config.path)
    if not _IFNAME.match(bridge):
        raise ConfigError("MANAGEMENT_INTERFACE in %s is %s, not a bridge name; set "
                          "management.bridge" % (inventory, _show(bridge)),
                          key="management.bridge", path=config.path)
    return bridge
