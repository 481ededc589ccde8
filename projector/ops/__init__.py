"""Operator commands on the projection: dead letters, rebuilds, pause and status."""
