"""tapwatch: agentless IoT/OT network security monitor."""

__version__ = "0.1.0"
