"""The pure domain: aggregates, commands, events and errors. Standard library only."""
