"""The topology, declared apart from the processors: every topic and table, once.

`python -m topology` prints it; the README's picture is drawn from that description.
"""
