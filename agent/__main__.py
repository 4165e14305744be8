"""`python -m agent` runs the `agent` command."""

import sys

from agent.tools.cli import main

sys.exit(main())
