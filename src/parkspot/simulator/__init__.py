"""`parkspot simulate`: realistic traffic against a running server, through its public API
only (client.py: HTTP and counting; world.py: setup; traffic.py: actions and the loop;
progress.py: the display)."""

from parkspot.simulator.client import SetupError, Tally
from parkspot.simulator.progress import Progress
from parkspot.simulator.traffic import Options, simulate

__all__ = ["Options", "Progress", "SetupError", "Tally", "simulate"]
