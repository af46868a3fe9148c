"""Bad-input fuzzing of every core parser.

Each `targets_*.py` module in this package defines `TARGETS: list[Target]`. The driver feeds each target
random bytes and mutations of its valid seeds, and classifies every outcome: accepted, rejected with our
RemoteProtocolError family (typed), or any other exception (untyped: a bug).
"""
