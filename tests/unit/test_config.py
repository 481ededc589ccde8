"""Settings from the environment: defaults, accepted forms, and one message per malformed variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import ROLES, ConfigError, Settings, public_address


def problems(**env: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    return raised.value.problems


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})

    assert (settings.partitions, settings.grace_seconds, settings.command_addr) == (16, 5.0, "127.0.0.1:50051")
    assert settings.database_url is None and settings.nats_url is None and settings.metrics_addr is None
    assert settings.connect_timeout_seconds == 2.0


def test_well_formed_values_are_taken() -> None:
    settings = Settings.from_env({
        "DATABASE_URL": "postgres://u:p@db:5432/orders", "NATS_URL": "nats-1:4222", "COMMAND_ADDR": "[::]:7000",
        "METRICS_ADDR": ":9464", "ORDERS_PARTITIONS": "4", "ORDERS_GRACE_SECONDS": "0", "LOG_LEVEL": "debug",
        "ORDERS_STREAM_MAX_MSGS": "1000", "ORDERS_RELAY_CRASH_AFTER_PUBLISH": "0.5",
        "ORDERS_CONNECT_TIMEOUT_SECONDS": "0.5",
    })

    assert (settings.partitions, settings.grace_seconds, settings.log_level) == (4, 0.0, "DEBUG")
    assert (settings.command_addr, settings.metrics_addr, settings.stream_max_msgs) == ("[::]:7000", ":9464", 1000)
    assert settings.require_database_url() == "postgresql://u:p@db:5432/orders"
    assert settings.relay_crash_after_publish == 0.5 and settings.connect_timeout_seconds == 0.5


def test_an_empty_value_counts_as_unset() -> None:
    assert Settings.from_env({"ORDERS_PARTITIONS": "", "DATABASE_URL": ""}).partitions == 16


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("ORDERS_PARTITIONS", "abc", "not a whole number; expected a whole number from 1 up"),
        ("ORDERS_PARTITIONS", "0", "out of range"),
        ("ORDERS_PROJECTORS", "0", "out of range; expected a whole number from 1 to 64"),
        ("ORDERS_GRACE_SECONDS", "-1", "negative; expected a number of seconds >= 0"),
        ("ORDERS_RELAY_POLL_SECONDS", "0", "zero; expected a number of seconds > 0"),
        ("ORDERS_READ_WAIT_SECONDS", "nan", "not a finite number"),
        ("COMMAND_ADDR", "nohost", "no port; expected HOST:PORT"),
        ("QUERY_ADDR", "host:99999", "port '99999' is not a number from 0 to 65535"),
        ("METRICS_ADDR", "::1:9464", "an IPv6 host needs brackets"),
        ("DATABASE_URL", "mysql://db/orders", "scheme 'mysql' is not one of"),
        ("DATABASE_URL", "host=db dbname=orders", "no scheme; expected a postgresql:// URL"),
        ("DATABASE_URL", "postgresql://db:port/orders", "unparsable"),
        ("NATS_URL", "http://nats:4222", "scheme 'http' is not one of nats, tls, ws, wss"),
        ("LOG_LEVEL", "loud", "not a log level; expected DEBUG | INFO"),
        ("ORDERS_STREAM", "orders.events", "JetStream stream names cannot hold"),
        ("ORDERS_QUERY_SERVERS", "0", "out of range; expected a whole number from 1 to 64"),
        ("ORDERS_PG_REPLICA", "yes", "not 0 or 1; expected 1 (on) or 0 (off)"),
        ("ORDERS_STREAM_MAX_BYTES", "0", "zero; expected -1 (no limit)"),
        ("ORDERS_RELAY_CRASH_AFTER_PUBLISH", "2", "out of range; expected a probability from 0 to 1"),
        ("ORDERS_METRICS_BASE_PORT", "70000", "out of range; expected a whole number from 0 to 65535"),
        ("ORDERS_CONNECT_TIMEOUT_SECONDS", "soon", "not a number"),
    ],
)
def test_a_malformed_variable_is_named_with_its_problem_and_the_expected_form(name: str, value: str, says: str) -> None:
    [message] = problems(**{name: value})

    assert message.startswith(f"{name}=") and says in message


def test_every_problem_is_reported_at_once() -> None:
    found = problems(ORDERS_PARTITIONS="abc", ORDERS_GRACE_SECONDS="-1", COMMAND_ADDR="nohost")

    assert [p.split("=")[0] for p in found] == ["COMMAND_ADDR", "ORDERS_PARTITIONS", "ORDERS_GRACE_SECONDS"]


def test_a_password_in_a_url_is_never_repeated() -> None:
    [message] = problems(DATABASE_URL="mysql://orders:s3cret@db:3306/orders")

    assert "s3cret" not in message and "db:3306" in message


def test_a_missing_service_url_says_what_to_set() -> None:
    settings = Settings.from_env({})

    with pytest.raises(ConfigError, match="DATABASE_URL is not set.*postgresql://"):
        settings.require_database_url()
    with pytest.raises(ConfigError, match="NATS_URL is not set.*nats://"):
        settings.require_nats_url()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://orders:s3cret@db:5432/orders?sslmode=require", "postgresql://db:5432/orders"),
        ("nats://token@nats:4222", "nats://nats:4222"),
        ("nats:4222", "nats://nats:4222"),
        ("postgresql:///orders", "postgresql://localhost/orders"),
    ],
)
def test_a_public_address_drops_credentials_and_options(url: str, shown: str) -> None:
    assert public_address(url) == shown


def test_each_role_takes_its_own_database_url_else_database_url() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgres://owner:o@db/orders",
                                  "QUERY_DATABASE_URL": "postgresql+psycopg://reader:r@replica/orders"})

    assert settings.role_database_url("query-server") == "postgresql://reader:r@replica/orders"
    assert settings.role_database_url("relay") == "postgresql://owner:o@db/orders"
    assert settings.require_database_url() == "postgresql://owner:o@db/orders"  # operator commands: the owner


def test_a_role_without_any_database_url_names_both_variables() -> None:
    with pytest.raises(ConfigError, match="neither PROJECTOR_DATABASE_URL nor DATABASE_URL is set"):
        Settings.from_env({}).role_database_url("projector")


def test_a_malformed_role_database_url_is_reported_without_its_password() -> None:
    [message] = problems(RELAY_DATABASE_URL="mysql://relay:s3cret@db/orders")

    assert message.startswith("RELAY_DATABASE_URL=") and "s3cret" not in message


def test_nats_credentials_and_tls_files_are_taken(tmp_path: Path) -> None:
    ca, creds = tmp_path / "ca.pem", tmp_path / "relay.creds"
    ca.write_text("pem"), creds.write_text("creds")

    access = Settings.from_env({"NATS_CREDS": str(creds), "NATS_TLS_CA": str(ca)}).nats_access
    login = Settings.from_env({"NATS_USER": "orders-relay", "NATS_PASSWORD": "s3cret"}).nats_access

    assert (access.creds, access.tls_ca, access.user) == (creds, ca, None)
    assert (login.user, login.password) == ("orders-relay", "s3cret")
    assert "s3cret" not in repr(login)


def test_nats_access_problems_are_reported_at_once_and_never_echo_the_password(tmp_path: Path) -> None:
    found = problems(NATS_CREDS=str(tmp_path / "missing.creds"), NATS_PASSWORD="s3cret",
                     NATS_TLS_CERT=str(tmp_path / "missing.pem"))

    assert [p.split("=", 1)[0] for p in found] == ["NATS_CREDS", "NATS_TLS_CERT", "NATS_PASSWORD", "NATS_TLS_KEY"]
    assert not any("s3cret" in p for p in found)


def test_the_token_key_is_taken_under_its_name_or_its_former_one_else_made_up_and_said_so() -> None:
    assert Settings.from_env({"ORDERS_TOKEN_KEY": "k1", "ORDERS_PAGE_TOKEN_KEY": "k2"}).token_key == b"k1"
    assert Settings.from_env({"ORDERS_PAGE_TOKEN_KEY": "k2"}).token_key == b"k2"
    assert not Settings.from_env({"ORDERS_PAGE_TOKEN_KEY": "k2"}).token_key_generated
    made_up = Settings.from_env({})
    assert made_up.token_key_generated and len(made_up.token_key) == 64
    assert Settings.from_env({}).token_key != made_up.token_key


def test_orders_roles_chooses_the_roles_orders_up_starts_in_their_own_order() -> None:
    assert Settings.from_env({}).up_roles == ROLES
    assert Settings.from_env({"ORDERS_ROLES": "relay, command-server"}).up_roles == ("command-server", "relay")


@pytest.mark.parametrize("value", ["command-server,saga-ish", ",", "query"])
def test_orders_roles_names_what_is_not_a_role(value: str) -> None:
    [message] = problems(ORDERS_ROLES=value)

    assert message.startswith("ORDERS_ROLES=") and "command-server, query-server, relay, projector" in message


def test_query_servers_and_the_embedded_replica_are_off_unless_asked_for() -> None:
    assert (Settings.from_env({}).query_servers, Settings.from_env({}).pg_replica) == (1, False)

    settings = Settings.from_env({"ORDERS_QUERY_SERVERS": "2", "ORDERS_PG_REPLICA": "1"})

    assert (settings.query_servers, settings.pg_replica) == (2, True)


def test_nats_url_takes_a_clusters_servers_and_each_is_checked() -> None:
    url = "nats://u:p@n1:4222, nats://u:p@n2:4222,n3:4222"

    assert Settings.from_env({"NATS_URL": url}).nats_url == url
    assert public_address(url) == "nats://n1:4222,nats://n2:4222,nats://n3:4222"
    said = problems(NATS_URL="nats://n1:4222,http://n2:4222")
    assert len(said) == 1 and "scheme 'http'" in said[0]
    assert "an empty server between commas" in problems(NATS_URL="nats://n1:4222,,nats://n2:4222")[0]


def test_stream_replicas_follow_the_embedded_nodes_unless_set() -> None:
    assert (Settings.from_env({}).nats_nodes, Settings.from_env({}).stream_replicas) == (1, 1)
    assert Settings.from_env({"ORDERS_NATS_NODES": "3"}).stream_replicas == 3
    assert Settings.from_env({"ORDERS_NATS_NODES": "3", "ORDERS_STREAM_REPLICAS": "1"}).stream_replicas == 1
    # An external cluster's size is the operator's to know.
    assert Settings.from_env({"NATS_URL": "nats://n1:4222", "ORDERS_STREAM_REPLICAS": "3"}).stream_replicas == 3


@pytest.mark.parametrize(("env", "says"), [
    ({"ORDERS_STREAM_REPLICAS": "3"}, "ORDERS_STREAM_REPLICAS='3': more replicas than the 1 embedded NATS server "
                                      "(ORDERS_NATS_NODES); expected a number from 1 to 1"),
    ({"ORDERS_NATS_NODES": "6"}, "ORDERS_NATS_NODES='6': out of range; expected a whole number from 1 to 5"),
    ({"ORDERS_NATS_NODES": "3", "ORDERS_STREAM_REPLICAS": "0"}, "ORDERS_STREAM_REPLICAS='0': out of range"),
])
def test_replicas_and_nodes_out_of_bounds_are_named(env: dict[str, str], says: str) -> None:
    said = problems(**env)

    assert len(said) == 1 and said[0].startswith(says), said
