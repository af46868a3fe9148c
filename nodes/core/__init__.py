"""Sans-I/O protocol core.

Pure functions and state machines over bytes. Nothing here imports trio, socket, time or os.urandom:
randomness and the clock are parameters, so every function is deterministic and testable with vectors.
"""
