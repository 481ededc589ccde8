"""The chaos suite: clients record every operation as a line of history, a nemesis injects faults
on a seeded schedule, and a checker judges the history and the system's state after it settles
against the invariants G1-G8 (docs/chaos.md). `python -m tests.chaos --help`; `make chaos`."""
