"""The lab: an XAPI simulator and scenarios for rehearsing the agent without XCP-ng."""
