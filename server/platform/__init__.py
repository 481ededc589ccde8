"""What every process shares: the gRPC server skeleton, the error table, wire translation, NATS helpers, the schema and its migrations."""
