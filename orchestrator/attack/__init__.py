"""`onionlab attack guard-discovery`: Øverlier and Syverson's attack on a lab (docs/attack.md).

curves.py   the adversary's share and the probability curves
run.py      trials on a running lab, with and without entry guards
report.py   JSON, PNG and HTML
"""
