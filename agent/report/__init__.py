"""What reports the agent: status file, trace, journal, metrics, XAPI messages."""
