import os

# The runner starts processes again (PostgreSQL, NATS, roles) while its clients' gRPC threads run:
# gRPC's fork handlers would then run in the new process between fork and exec, and crash it.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from tests.chaos.run import main  # noqa: E402  (gRPC reads the setting when it is imported)

raise SystemExit(main())
