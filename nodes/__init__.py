"""onionlab node software: `python -m nodes ROLE --config FILE`."""
