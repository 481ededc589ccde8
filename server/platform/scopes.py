"""The scopes a bearer token grants (its `scope` claim): what each RPC needs is decided per
service in its composition root (serving.required_scopes)."""

READ = "orders.read"  # every QueryService RPC, WatchOrders included
WRITE = "orders.write"  # every CommandService RPC
ADMIN = "orders.admin"  # operator actions; implies neither of the others
SCOPES = (READ, WRITE, ADMIN)
