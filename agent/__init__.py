"""sspn-agent: keeps a NIC-less XCP-ng / XenServer dom0 reachable through its firewall VM."""

__version__ = "0.1.0"
