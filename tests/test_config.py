from __future__ import annotations

from pathlib import Path

import pytest

from mailsupport.config import build_config, load_config
from mailsupport.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_example_config_is_valid_and_matches_defaults() -> None:
    example = load_config(REPO / "config" / "mailsupport.toml")
    defaults = build_config({}, env={})
    assert example.support == defaults.support
    assert example.database == defaults.database
    assert example.smtp == defaults.smtp
    assert example.relay == defaults.relay
    assert example.outbound == defaults.outbound
    assert example.notifications == defaults.notifications
    assert example.limits == defaults.limits
    assert example.pipeline == defaults.pipeline
    assert example.daemon == defaults.daemon
    assert example.operators == defaults.operators


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp": {"prot": 25}}, "Unknown config key smtp.prot."),
        ({"smtpp": {}}, "Unknown config section [smtpp]."),
        ({"smtp": {"port": "25"}}, "smtp.port must be an integer"),
        ({"smtp": {"port": 70000}}, "smtp.port must be an integer"),
        ({"smtp": {"lmtp": "yes"}}, "smtp.lmtp must be true or false"),
        ({"smtp": {"max_connections": 0}}, "smtp.max_connections must be a positive integer"),
        ({"smtp": {"idle_timeout": 0}}, "smtp.idle_timeout must be a positive number"),
        ({"support": {"address": "not-an-address"}}, "support.address must be an email address"),
        ({"support": {"tag": "bad tag!"}}, "support.tag must be"),
        ({"database": {"url": "mysql://x"}}, "database.url must be"),
        ({"queues": {"sales@example.com": "Bad Queue"}}, "queues.sales@example.com must be"),
        ({"queues": {"support@example.com": "x"}}, "repeats support.address"),
        ({"smtp": 5}, "[smtp] must be a table"),
        ({"relay": {"tls": "yes"}}, "relay.tls must be one of none, starttls, ssl"),
        ({"notifications": {"statuses": ["done"]}}, "notifications.statuses must be a list"),
        ({"limits": {"auto_replies_per_hour": 0}}, "limits.auto_replies_per_hour must be"),
        ({"limits": {"loop_window": 0}}, "limits.loop_window must be a positive integer"),
        ({"limits": {"repeats_before_suppress": 0}}, "limits.repeats_before_suppress must be"),
        ({"limits": {"relays_per_ticket_per_window": 1.5}}, "limits.relays_per_ticket_per_window"),
        (
            {"limits": {"notifications_per_ticket_per_window": -1}},
            "limits.notifications_per_ticket_per_window must be",
        ),
        ({"outbound": {"give_up_after_hours": -1}}, "outbound.give_up_after_hours must be"),
        (
            {"pipeline": {"automatic_mail": "keep"}},
            "pipeline.automatic_mail must be one of ticket, drop",
        ),
        (
            {"support": {"trusted_relays": ["127.0.0.1", "mx.example.com"]}},
            "support.trusted_relays must hold IP addresses or networks; 'mx.example.com'",
        ),
        ({"support": {"trusted_relays": "127.0.0.1"}}, "support.trusted_relays must be a list"),
        ({"operators": {"reply_address_days": 0}}, "operators.reply_address_days must be"),
    ],
)
def test_bad_config_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_environment_overrides_secrets() -> None:
    env = {
        "MAILSUPPORT_DATABASE_URL": "postgresql+psycopg://u:secret@db/x",
        "MAILSUPPORT_SMTP_PORT": "2525",
    }
    config = build_config({"database": {"url": "sqlite:///x.db"}}, env=env)
    assert config.database.url == "postgresql+psycopg://u:secret@db/x"
    assert config.smtp.port == 2525
    with pytest.raises(ConfigError, match="MAILSUPPORT_SMTP_PORT"):
        build_config({}, env={"MAILSUPPORT_SMTP_PORT": "many"})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("true", True), (" Yes ", True), ("ON", True), ("1", True)],
        *[("false", False), ("No", False), ("off", False), ("0", False)],
    ],
)
def test_environment_booleans_take_the_usual_spellings(text: str, value: bool) -> None:
    assert build_config({}, env={"MAILSUPPORT_SMTP_ENABLED": text}).smtp.enabled is value


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("MAILSUPPORT_SMTP_ENABLED", "ture", "(smtp.enabled): must be true or false"),
        ("MAILSUPPORT_SMTP_LMTP", "", "(smtp.lmtp): must be true or false"),
        ("MAILSUPPORT_SMTP_LMTP", "2", "(smtp.lmtp): must be true or false"),
        ("MAILSUPPORT_SMTP_PORT", "25.0", "(smtp.port): must be an integer from 0 to 65535."),
        ("MAILSUPPORT_SMTP_PORT", "70000", "(smtp.port): must be an integer from 0 to 65535."),
        ("MAILSUPPORT_PIPELINE_WORKERS", "two", "(pipeline.workers): must be an integer, 0 or"),
        ("MAILSUPPORT_DATABASE_BUSY_TIMEOUT", "nan", "(database.busy_timeout): must be a positive"),
        ("MAILSUPPORT_OUTBOUND_SEND_INTERVAL", "inf", "(outbound.send_interval): must be"),
        ("MAILSUPPORT_NOTIFICATIONS_COMBINE_SECONDS", "-nan", "(notifications.combine_seconds)"),
        ("MAILSUPPORT_NOTIFICATIONS_STATUSES", "open,done", "(notifications.statuses): must be"),
        ("MAILSUPPORT_SUPPORT_TRUSTED_RELAYS", "10.0.0.1,mx", "(support.trusted_relays): must"),
    ],
)
def test_bad_environment_value_names_the_variable_and_the_key(
    variable: str, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, env={variable: text})
    assert str(info.value).startswith(f"Invalid environment variable {variable} ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("number", [float("nan"), float("inf")])
def test_a_number_that_is_not_finite_is_refused(number: float) -> None:
    with pytest.raises(ConfigError, match=r"database\.busy_timeout must be a positive number"):
        build_config({"database": {"busy_timeout": number}}, env={})
    with pytest.raises(ConfigError, match=r"notifications\.combine_seconds must be a number"):
        build_config({"notifications": {"combine_seconds": number}}, env={})


def test_queues_route_addresses() -> None:
    config = build_config({"queues": {"Sales@Example.com": "sales"}}, env={})
    assert config.queue_for("sales@example.com") == "sales"
    assert config.queue_for("support@example.com") == "support"
    assert config.queue_for("other@example.com") is None
    assert config.support_addresses == {"support@example.com", "sales@example.com"}


def test_file_errors_are_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_subaddresses_are_ours() -> None:
    config = build_config({"queues": {"sales@example.com": "sales"}}, env={})
    assert config.base_address("Support+bounce-12-abc@Example.com") == "support@example.com"
    assert config.base_address("<sales+1042-k3j9@example.com>") == "sales@example.com"
    assert config.base_address("support@example.com") == "support@example.com"
    assert config.base_address("support@example.com.evil.test") is None
    assert config.base_address("other+support@example.com") is None
    assert config.base_address("no-at-sign") is None
    assert config.queue_for("sales+x@example.com") == "sales"


def test_relay_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "relay.pw"
    secret.write_text("s3cret\n")
    config = build_config({"relay": {"password_file": str(secret)}}, env={})
    assert config.relay.secret() == "s3cret"
    missing = build_config({"relay": {"password_file": str(tmp_path / "nope")}}, env={})
    with pytest.raises(ConfigError, match=r"relay\.password_file"):
        missing.relay.secret()


def _imap(**values: object) -> dict[str, object]:
    return {"imap": [{"name": "main", "host": "imap.example.com", "username": "u", **values}]}


def test_imap_accounts_and_their_defaults(tmp_path: Path) -> None:
    assert build_config({}, env={}).imap == ()
    secret = tmp_path / "imap.pw"
    secret.write_text("from-file\n")
    data = {
        "imap": [
            {"name": "main", "host": "imap.example.com", "username": "Support@Example.com"},
            {
                "name": "sales-box",
                "host": "mail.example.com",
                "username": "sales",
                "tls": "starttls",
                "password_file": str(secret),
                "folder": "Sales",
                "queue": "sales",
                "after": "delete",
            },
        ]
    }
    main, sales = build_config(data, env={"MAILSUPPORT_IMAP_MAIN_PASSWORD": "from-env"}).imap
    assert (main.port, main.tls, main.folder, main.after) == (993, "ssl", "INBOX", "move:Processed")
    assert (main.after_action, main.after_folder) == ("move", "Processed")
    assert main.secret() == "from-env"
    assert main.address == "support@example.com"  # the login, when it is an address
    assert "from-env" not in repr(main)
    assert (sales.port, sales.after_action, sales.after_folder) == (143, "delete", "")
    assert sales.secret() == "from-file"
    assert sales.address == ""
    # The environment wins over a file; the variable is the name upper-cased, A-Z 0-9 and _.
    env = {"MAILSUPPORT_IMAP_SALES_BOX_PASSWORD": "env"}
    assert build_config(data, env=env).imap[1].secret() == "env"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_imap(hostt="x"), "Unknown config key imap[0].hostt."),
        (_imap(port=99999), "Invalid config: imap[0].port must be an integer from 0 to 65535."),
        (_imap(tls="yes"), "imap[0].tls must be one of ssl, starttls, none"),
        (_imap(after="archive"), "imap[0].after must be move:<folder>, flag or delete"),
        (_imap(after="move:"), "imap[0].after must be move:<folder>, flag or delete"),
        (_imap(after="move:INBOX"), "imap[0].after must name a folder other than folder"),
        (_imap(queue="Bad Queue"), "imap[0].queue must be a lower-case queue name"),
        (_imap(idle_refresh=1800), "imap[0].idle_refresh must be at most 1500 seconds"),
        (_imap(name="two words"), "imap[0].name must be 1-64 letters"),
        ({"imap": [{"name": "main", "host": "h"}]}, "imap[0].username is required"),
        ({"imap": {"name": "main"}}, "imap must be a list of [[imap]] tables"),
        ({"imap": ["main"]}, "imap[0] must be a table"),
        (
            {"imap": [{"name": n, "host": "h", "username": "u"} for n in ("main", "MAIN")]},
            "imap[1].name repeats 'main'",
        ),
    ],
)
def test_bad_imap_config_names_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(data, env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_imap_password_file_that_cannot_be_read(tmp_path: Path) -> None:
    config = build_config(_imap(password_file=str(tmp_path / "missing")), env={})
    with pytest.raises(ConfigError, match=r"Cannot read imap main password_file"):
        config.imap[0].secret()


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        (
            "MAILSUPPORT_SMTP_PROT",
            "Unknown environment variable MAILSUPPORT_SMTP_PROT (no config key smtp.prot; "
            "did you mean MAILSUPPORT_SMTP_PORT?).",
        ),
        (
            "MAILSUPPORT_DATABSE_URL",
            "Unknown environment variable MAILSUPPORT_DATABSE_URL (no config section [databse]; "
            "did you mean MAILSUPPORT_DATABASE_URL?).",
        ),
        (
            "MAILSUPPORT_QUEUES_SALES",
            "Unknown environment variable MAILSUPPORT_QUEUES_SALES "
            "([queues] is not set from the environment).",
        ),
    ],
)
def test_an_environment_variable_that_overrides_nothing_is_refused(
    variable: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        build_config({}, env={variable: "25"})
    assert str(info.value) == message


def test_variables_that_are_not_config_keys_are_left_alone(tmp_path: Path) -> None:
    env = {
        "MAILSUPPORT_CONFIG": str(tmp_path / "mailsupport.toml"),
        "MAILSUPPORT_IMAP_MAIN_PASSWORD": "imap",
        "MAILSUPPORT_IMAP_SALES_BOX_PASSWORD": "imap",
        "MAILSUPPORT_RELAY_PASSWORD": "relay",
        "MAILSUPPORT_TEST_PG_URL": "postgresql+psycopg://postgres@127.0.0.1/test",
        "MAILSUPPORT_CORPUS": str(tmp_path),
        "MAILSUPPORTX": "not ours",
    }
    assert build_config({}, env=env).relay.secret() == "relay"


def test_the_environment_is_checked_when_a_file_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "mailsupport.toml"
    path.write_text("[smtp]\nport = 2525\n")
    monkeypatch.setenv("MAILSUPPORT_SMTP_PROT", "25")
    with pytest.raises(ConfigError, match=r"^Unknown environment variable MAILSUPPORT_SMTP_PROT "):
        load_config(path)


def test_trusted_relays_are_networks_from_the_file_or_the_environment() -> None:
    data = {"support": {"trusted_relays": ["127.0.0.1", "10.1.2.3/16", "::1"]}}
    assert build_config(data, env={}).support.trusted_relays == (
        "127.0.0.1/32",
        "10.1.0.0/16",
        "::1/128",
    )
    env = {"MAILSUPPORT_SUPPORT_TRUSTED_RELAYS": "192.0.2.25, 2001:db8::/32"}
    assert build_config({}, env=env).support.trusted_relays == ("192.0.2.25/32", "2001:db8::/32")
