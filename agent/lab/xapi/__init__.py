"""A faithful XAPI simulator for the unchanged PyPI XenAPI client (docs/xapi-fidelity.md).

``Simulator`` serves a ``Scenario`` (``load_scenario``) on a Unix socket and optionally TCP;
``serve_forever`` / ``main`` run it in the foreground for ``agent lab xapi``.
"""

from .cli import main, serve_forever
from .errors import XapiError
from .scenario import Scenario, ScenarioError, load_scenario
from .simulator import Simulator

__all__ = ["Simulator", "load_scenario", "serve_forever", "main", "Scenario", "ScenarioError",
           "XapiError"]
