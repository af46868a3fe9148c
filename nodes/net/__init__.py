"""Trio I/O drivers: thin layers that feed bytes into nodes.core and write what it returns."""
