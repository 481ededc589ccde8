"""Orders: the `orders` CLI and the processes it runs (command side, query side, relay), their platform, and the local dev stack."""
