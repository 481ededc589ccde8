"""The outbox relay process and its operator commands."""
