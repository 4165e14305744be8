"""Adapters: the real implementations of the ports (pyroute2, XenAPI, icmplib) and their helpers."""
