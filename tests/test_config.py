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


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp": {"prot": 25}}, "Unknown config key smtp.prot."),
        ({"smtpp": {}}, "Unknown config section [smtpp]."),
        ({"smtp": {"port": "25"}}, "smtp.port must be an integer"),
        ({"smtp": {"port": 70000}}, "smtp.port must be an integer"),
        ({"smtp": {"lmtp": "yes"}}, "smtp.lmtp must be true or false"),
        ({"support": {"address": "not-an-address"}}, "support.address must be an email address"),
        ({"support": {"tag": "bad tag!"}}, "support.tag must be"),
        ({"database": {"url": "mysql://x"}}, "database.url must be"),
        ({"queues": {"sales@example.com": "Bad Queue"}}, "queues.sales@example.com must be"),
        ({"queues": {"support@example.com": "x"}}, "repeats support.address"),
        ({"smtp": 5}, "[smtp] must be a table"),
        ({"relay": {"tls": "yes"}}, "relay.tls must be one of none, starttls, ssl"),
        ({"notifications": {"statuses": ["done"]}}, "notifications.statuses must be a list"),
        ({"limits": {"auto_replies_per_hour": 0}}, "limits.auto_replies_per_hour must be"),
        ({"outbound": {"give_up_after_hours": -1}}, "outbound.give_up_after_hours must be"),
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
