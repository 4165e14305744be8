"""The operator's tools: the command line, preflight check, install, bundle, legacy import, diagrams."""
