"""The command side: the CommandService process, its pipeline, handlers and unit of work."""
