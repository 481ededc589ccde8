"""`orders up`: the local stack of embedded PostgreSQL and NATS and every role, supervised."""
