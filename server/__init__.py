"""Orders: the command side, the relay, the query side and the `orders` CLI."""
