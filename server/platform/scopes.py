"""The scopes a bearer token grants (its `scope` claim): what each RPC needs is decided per
service in its composition root (serving.required_scopes)."""

READ = "orders.read"  # every QueryService RPC, WatchOrders included
WRITE = "orders.write"  # every CommandService RPC
ADMIN = "orders.admin"  # operator actions; implies neither of the others
# A service acting for every tenant (the fulfilment saga): its calls name the tenant in the
# x-tenant-id header. Adds no other right: the call still needs its own scope.
ANY_TENANT = "orders.any_tenant"
TENANT_SCOPES = (READ, WRITE, ADMIN)  # all a person of one tenant may hold (the dev token's)
SCOPES = (*TENANT_SCOPES, ANY_TENANT)
