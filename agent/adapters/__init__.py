"""Adapters: the real implementations of the ports (rtnetlink, XenAPI, icmplib) and their helpers."""
