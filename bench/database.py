"""The database ceiling for `orders bench`: pgbench running PlaceOrder's own statement (the
one-statement write, which also finds a replayed request id and checks the customer) with no
Python in the way."""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from server.command import store as write_store

# pgbench has no per-transaction parameters beyond \\set: ids come from random numbers, which at
# this width never collide within a run.
_SCRIPT = """\\set n random(1, 9000000000000000000)
{write};
"""


def _write_statement() -> str:
    values = {
        "tenant_id": "'pgbench'", "request_id": "'r-' || :n", "method": "'PlaceOrder'",
        "request_hash": "'\\x00'::bytea", "response": "'\\x00'::bytea", "aggregate_id": "'o-' || :n",
        "customer_id": "'pgbench-customer'", "state": "'PLACED'", "currency_code": "'EUR'", "total": "29.97",
        "version": "1", "lines": "'p-1,1,9.99;p-2,2,9.99'", "event_id": "gen_random_uuid()", "aggregate_type": "'order'",
        "event_type": "'OrderPlaced'", "payload": "decode(repeat('00', 220), 'hex')", "headers": "'{}'::jsonb",
    }
    sql = write_store.WRITE[("order", "insert")]
    return re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], sql)


def pgbench_stage(pg_bin: Path, database_url: str, clients: int, seconds: float) -> dict[str, Any]:
    """Transactions per second pgbench sustains for PlaceOrder's statement."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO customers (tenant_id, customer_id, display_name, email, credit_currency, credit_limit,"
            " credit_reserved, version) VALUES ('pgbench', 'pgbench-customer', 'Bench', 'bench@example.com', 'EUR',"
            " 0, 0, 1) ON CONFLICT DO NOTHING"
        )
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "place_order.sql"
        script.write_text(_SCRIPT.format(write=" ".join(_write_statement().split())))
        result = subprocess.run(
            [str(pg_bin / "pgbench"), "-n", "-M", "prepared", "-f", str(script), "-c", str(clients),
             "-j", "2", "-T", str(max(1, round(seconds))), database_url],
            capture_output=True, text=True, check=True,
        )
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", result.stdout)
    if tps is None:
        raise RuntimeError(f"unexpected pgbench output:\n{result.stdout}\n{result.stderr}")
    return {"clients": clients, "pgbench_tps": round(float(tps.group(1)), 1)}
