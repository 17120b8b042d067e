"""Redaction: specs shown to callers, output tails, log events (peerd.core.redact, OutputTail,
peerd.log), and the node's secret store (peerd.runner.secrets)."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import pytest
import structlog

from peerd import log as peerd_log
from peerd.config import build_config
from peerd.core.redact import (
    REDACTED,
    credential_fragments,
    is_sensitive_name,
    redact_spec,
    redact_url,
    restore_redacted,
)
from peerd.core.secrets import SecretsFileError, env_secrets, parse_secrets_file
from peerd.errors import InvalidArgument
from peerd.runner.base import OutputTail
from peerd.runner.secrets import MissingSecret, SecretStore
from peerd.v1 import scheduler_pb2 as pb


@pytest.mark.parametrize(
    "name",
    ["Authorization", "proxy-authorization", "Cookie", "X-Api-Key", "X-Auth-Token", "DB_PASSWORD",
     "client_secret", "AWS_SECRET_ACCESS_KEY", "GIT_CREDENTIALS"],
)  # fmt: skip
def test_sensitive_names(name: str) -> None:
    assert is_sensitive_name(name)


@pytest.mark.parametrize("name", ["Content-Type", "X-Request-Id", "PATH", "HOME", "Accept"])
def test_ordinary_names(name: str) -> None:
    assert not is_sensitive_name(name)


def http_spec(**kw: object) -> pb.TaskSpec:
    return pb.TaskSpec(id="t", http=pb.HttpTarget(**kw))  # type: ignore[arg-type]


def test_redact_spec_hides_credential_headers_and_url_password_only() -> None:
    spec = http_spec(
        url="https://bot:hunter22@example.com/hook",
        headers={"Authorization": "Bearer abcdef", "X-Trace": "yes", "X-Api-Key": "k-123"},
        header_secrets={"X-Token": "PAYMENTS_TOKEN"},
    )
    shown = redact_spec(spec)
    assert shown.http.url == f"https://bot:{REDACTED}@example.com/hook"
    assert dict(shown.http.headers) == {
        "Authorization": REDACTED,
        "X-Trace": "yes",
        "X-Api-Key": REDACTED,
    }
    assert dict(shown.http.header_secrets) == {"X-Token": "PAYMENTS_TOKEN"}  # names are shown
    assert spec.http.headers["Authorization"] == "Bearer abcdef"  # the original is untouched


def test_redact_spec_returns_the_same_message_when_nothing_is_secret() -> None:
    spec = http_spec(url="https://example.com/", headers={"X-Trace": "yes"})
    assert redact_spec(spec) is spec


def test_redact_spec_hides_credential_env_of_shell_tasks() -> None:
    spec = pb.TaskSpec(shell=pb.ShellTarget(argv=["/bin/true"], env={"TOKEN": "t", "LANG": "C"}))
    assert dict(redact_spec(spec).shell.env) == {"TOKEN": REDACTED, "LANG": "C"}


def test_redact_url_without_password_is_unchanged() -> None:
    for url in ("https://example.com/", "https://user@example.com/", "not a url ["):
        assert redact_url(url) == url


def test_restore_puts_stored_credentials_back() -> None:
    stored = http_spec(url="https://u:pw1234@h/x", headers={"Authorization": "Bearer abc"})
    edited = redact_spec(stored)
    edited.http.headers["X-New"] = "1"
    restore_redacted(edited, stored)
    assert edited.http.url == "https://u:pw1234@h/x"
    assert dict(edited.http.headers) == {"Authorization": "Bearer abc", "X-New": "1"}


def test_restore_refuses_a_redacted_value_with_nothing_stored() -> None:
    stored = http_spec(url="https://h/", headers={})
    new = http_spec(url="https://h/", headers={"Authorization": REDACTED})
    with pytest.raises(
        InvalidArgument, match=re.escape("task.http.headers: header 'Authorization'")
    ):
        restore_redacted(new, stored)


def test_credential_fragments() -> None:
    assert credential_fragments("Bearer abcdef") == ["Bearer abcdef", "abcdef"]
    assert credential_fragments("Bearer ab") == ["Bearer ab"]
    assert credential_fragments("plain-token") == ["plain-token"]


# --- output tails ----------------------------------------------------------------------------


def test_output_tail_redacts_whole_occurrences() -> None:
    out = OutputTail(secrets=["s3cr3t-value"])
    out.add(b"token=s3cr3t-value; again s3cr3t-")
    out.add(b"value end")
    assert out.text() == f"token={REDACTED}; again {REDACTED} end"


def test_output_tail_never_shows_part_of_a_secret_cut_by_the_window() -> None:
    secret = "ABCDEFGHIJKLMNOP"
    for shift in range(len(secret) + 2):
        out = OutputTail(limit=64, secrets=[secret])
        out.add(b"x" * 100 + secret.encode() + b"y" * (64 - shift))
        text = out.text()
        for n in range(3, len(secret)):  # no suffix of 3+ characters of the secret
            assert secret[-n:] not in text, (shift, text)
        assert len(text.encode()) <= 64


def test_output_tail_without_secrets_keeps_exactly_the_limit() -> None:
    out = OutputTail(limit=10)
    out.add(b"0123456789abcdef")
    assert out.text() == "6789abcdef"


# --- secrets ---------------------------------------------------------------------------------


def test_env_secrets_only_from_the_prefix() -> None:
    env = {"PEERD_SECRET_A": "1", "AWS_SECRET_ACCESS_KEY": "x", "PEERD_SECRET_": "y"}
    assert env_secrets(env) == {"A": "1"}


def test_secrets_file_parse_errors_never_show_values() -> None:
    with pytest.raises(
        SecretsFileError, match=re.escape("f.toml: 'bad-name' is not a secret name")
    ):
        parse_secrets_file('"bad-name" = "v"', "f.toml")
    with pytest.raises(SecretsFileError, match=re.escape("f.toml: A must be a non-empty string")):
        parse_secrets_file("A = 1", "f.toml")


def test_store_file_wins_over_env_and_rotation_is_picked_up(tmp_path: Path) -> None:
    path = tmp_path / "secrets.toml"
    path.write_text('TOKEN = "from-file-1"\n')
    store = SecretStore(str(path), {"PEERD_SECRET_TOKEN": "from-env", "PEERD_SECRET_B": "b"}, "t")
    assert store.resolve({"Authorization": "TOKEN", "X": "B"}) == {
        "Authorization": "from-file-1",
        "X": "b",
    }
    path.write_text('TOKEN = "from-file-two"\n')  # size changes: re-read
    assert store.resolve({"A": "TOKEN"}) == {"A": "from-file-two"}
    path.write_text("TOKEN = [broken\n")  # a bad rewrite keeps the last good values
    assert store.resolve({"A": "TOKEN"}) == {"A": "from-file-two"}


def test_missing_secret_names_the_secret(tmp_path: Path) -> None:
    store = SecretStore("", {}, "t")
    with pytest.raises(MissingSecret, match="secret 'NOPE' is not set on this node"):
        store.resolve({"Authorization": "NOPE"})


def test_broken_secrets_file_refuses_the_configuration(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("A = [")
    with pytest.raises(InvalidArgument, match=re.escape(f"--secrets-file: {path}: not TOML")):
        build_config({"node_id": "n1", "secrets_file": str(path)}, {})
    path.write_text('A = "ok"')
    os.chmod(path, 0o600)
    assert build_config({"node_id": "n1", "secrets_file": str(path)}, {}).secrets_file == str(path)


# --- logs ------------------------------------------------------------------------------------


def test_log_events_never_show_secret_values_or_credential_keys() -> None:
    buffer = io.StringIO()
    peerd_log.configure_logging("json", "info")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=buffer))
    SecretStore("", {"PEERD_SECRET_PAY": "pay-tok-0001"}, "test-log")
    try:
        log = structlog.get_logger("t")
        log.info(
            "something",
            detail="sent pay-tok-0001 to x",
            authorization="Bearer zzz",
            fencing_token=42,
            idempotency_key="t/1",
            nested={"api_key": "k", "ok": ["pay-tok-0001"]},
        )
        try:
            raise RuntimeError("boom pay-tok-0001")
        except RuntimeError:
            log.exception("failed")
    finally:
        peerd_log.set_redacted_values("test-log", [])
        structlog.reset_defaults()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert "pay-tok-0001" not in buffer.getvalue()
    assert lines[0]["detail"] == f"sent {REDACTED} to x"
    assert lines[0]["authorization"] == REDACTED
    assert lines[0]["fencing_token"] == 42
    assert lines[0]["idempotency_key"] == "t/1"
    assert lines[0]["nested"] == {"api_key": REDACTED, "ok": [REDACTED]}
    assert REDACTED in lines[1]["exception"]
