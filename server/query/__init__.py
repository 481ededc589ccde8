"""The query side: the QueryService process, its reads of the read models, WatchOrders fan-out, signed tokens."""
