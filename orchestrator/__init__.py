"""onionlab orchestrator: topologies, backends, flow, chaos, reports."""

__version__ = "0.1.0"
