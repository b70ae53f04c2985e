"""Mail accounts from ``MIDAS_MAIL_CONFIG``: a TOML or YAML file parsed into frozen dataclasses, with clear errors.

Both formats give the same structure (a list ``account`` of tables, each with a list ``rule``),
so one parser checks both; the file's ending chooses the reader (``.yaml``/``.yml``: YAML).

Passwords never stand in the file: an account names the environment variable or the file that
holds its password (or an OAuth2 token file or command), and the secret is read only when the
account is fetched, so it is never part of a parsed object that could be logged or pickled.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from background_tasks.errors import MailConfigError

TLS_MODES = ("implicit", "starttls", "plain")
PROCESS_MODES = ("attachments", "eml", "both")
AFTER_ACTIONS = ("none", "read", "flag", "move")
#: file endings read as YAML; every other file is read as TOML
YAML_SUFFIXES = (".yaml", ".yml")
#: plain IMAP (no TLS) sends the password in the clear: only to this machine
PLAIN_HOSTS = ("127.0.0.1", "::1", "localhost")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SECRET_KEYS = ("password_env", "password_file", "oauth2_token_file", "oauth2_token_command")
_ACCOUNT_KEYS = {"name", "host", "port", "tls", "user", "folders", "rule", "rules", "ca_file", *_SECRET_KEYS}
_RULE_KEYS = {"name", "from", "to", "subject", "has_attachment", "since", "process", "after", "move_to"}


@dataclass(frozen=True)
class Rule:
    """Which mails (every given criterion must hold), what of them to process, and what to do afterwards."""

    name: str = "all"
    from_contains: str | None = None
    to_contains: str | None = None
    subject_contains: str | None = None
    has_attachment: bool | None = None
    since: date | None = None
    process: str = "attachments"
    after: str = "none"
    move_to: str | None = None


@dataclass(frozen=True)
class Secret:
    """Where an account's password or OAuth2 token is (never the secret itself)."""

    kind: str  # password_env | password_file | oauth2_token_file | oauth2_token_command
    where: str

    @property
    def oauth2(self) -> bool:
        return self.kind.startswith("oauth2")

    def read(self, environ: Mapping[str, str] | None = None, timeout: float = 30.0) -> str:
        """The secret now; ``MailConfigError`` (without the secret) when it cannot be had."""
        environ = os.environ if environ is None else environ
        if self.kind == "password_env":
            value = environ.get(self.where)
            if not value:
                raise MailConfigError(f"the environment variable {self.where} (password_env) is not set")
            return value
        if self.kind in ("password_file", "oauth2_token_file"):
            try:
                return Path(self.where).expanduser().read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise MailConfigError(f"{self.kind} {self.where} cannot be read: {exc.strerror}") from None
        try:
            done = subprocess.run(shlex.split(self.where), capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MailConfigError(f"oauth2_token_command failed: {type(exc).__name__}") from None
        if done.returncode != 0 or not done.stdout.strip():
            raise MailConfigError(f"oauth2_token_command exited with {done.returncode} and no token")
        return done.stdout.strip()


@dataclass(frozen=True)
class Account:
    """One IMAP account: where, how, which folders and rules (``repr`` shows no secret: there is none)."""

    name: str
    host: str
    port: int
    tls: str
    user: str
    secret: Secret
    folders: tuple[str, ...] = ("INBOX",)
    rules: tuple[Rule, ...] = field(default_factory=lambda: (Rule(),))
    #: certificates to trust besides the system's (a company CA, a self-signed server)
    ca_file: Path | None = None


def load_accounts(path: Path) -> tuple[Account, ...]:
    """Every account of the TOML or YAML file at ``path`` (YAML when it ends in .yaml or .yml)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MailConfigError(f"MIDAS_MAIL_CONFIG={path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise MailConfigError(f"MIDAS_MAIL_CONFIG={path} is not UTF-8 text") from None
    data = _read_yaml(text, path) if path.suffix.lower() in YAML_SUFFIXES else _read_toml(text, path)
    return parse_accounts(data, str(path))


def _read_toml(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MailConfigError(f"MIDAS_MAIL_CONFIG={path} is not valid TOML: {exc}") from None


def _read_yaml(text: str, path: Path) -> Mapping[str, Any]:
    """YAML's safe subset (no tags that build objects); an empty file is no accounts."""
    import yaml  # only a YAML config needs it

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MailConfigError(f"MIDAS_MAIL_CONFIG={path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MailConfigError(f"MIDAS_MAIL_CONFIG={path}: the YAML must be a mapping with a list `account`")
    return data


def parse_accounts(data: Mapping[str, Any], label: str = "mail config") -> tuple[Account, ...]:
    """Accounts from parsed TOML or YAML: a list ``account`` of tables, each with a list ``rule``."""
    unknown = set(data) - {"account", "accounts"}
    if unknown:
        keys = sorted(map(str, unknown))
        raise MailConfigError(f"{label}: unknown top-level key(s) {keys}; accounts go in [[account]] (YAML: account:)")
    raw = data.get("account", data.get("accounts", []))
    if not isinstance(raw, list) or not all(isinstance(a, dict) for a in raw):
        raise MailConfigError(f"{label}: accounts must be [[account]] tables (YAML: a list under account:)")
    accounts = tuple(_account(a, f"{label}: account {i + 1}") for i, a in enumerate(raw))
    names = [a.name for a in accounts]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise MailConfigError(f"{label}: account names must be unique; {doubled} appear more than once")
    return accounts


def _text(raw: Mapping[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = raw.get(key)
    if value is None:
        if required:
            raise MailConfigError(f"{where}: {key} is missing")
        return None
    if not isinstance(value, str) or not value.strip():
        raise MailConfigError(f"{where}: {key} must be a non-empty string")
    return value.strip()


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str, where: str) -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise MailConfigError(f"{where}: {key} must be one of {', '.join(choices)} (not {value!r})")
    return value


def _account(raw: dict[str, Any], where: str) -> Account:
    if "password" in raw:
        raise MailConfigError(
            f"{where}: a password is never kept in the config file; name it with password_env or password_file"
        )
    unknown = set(raw) - _ACCOUNT_KEYS
    if unknown:
        raise MailConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
    name = _text(raw, "name", where, required=True) or ""
    if not _NAME.match(name):
        raise MailConfigError(f"{where}: name {name!r} may hold only letters, digits, '.', '_' and '-'")
    where = f"{where.rpartition(': ')[0]}: account {name}"
    host = _text(raw, "host", where, required=True) or ""
    tls = _choice(raw, "tls", TLS_MODES, "implicit", where)
    if tls == "plain" and host not in PLAIN_HOSTS:
        raise MailConfigError(f"{where}: tls = plain sends the password in the clear; only for 127.0.0.1")
    port = raw.get("port", 993 if tls == "implicit" else 143)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise MailConfigError(f"{where}: port must be a number between 1 and 65535")
    given = [key for key in _SECRET_KEYS if key in raw]
    if len(given) != 1:
        raise MailConfigError(f"{where}: give exactly one of {', '.join(_SECRET_KEYS)} (found {len(given)})")
    secret = Secret(given[0], _text(raw, given[0], where, required=True) or "")
    folders = raw.get("folders", ["INBOX"])
    if isinstance(folders, str):
        folders = [folders]
    if not isinstance(folders, list) or not folders or not all(isinstance(f, str) and f.strip() for f in folders):
        raise MailConfigError(f"{where}: folders must be a list of folder names")
    rules_raw = raw.get("rule", raw.get("rules"))
    if rules_raw is not None and (not isinstance(rules_raw, list) or not all(isinstance(r, dict) for r in rules_raw)):
        raise MailConfigError(f"{where}: rules must be [[account.rule]] tables (YAML: a list under rule:)")
    rules = tuple(_rule(r, f"{where}, rule {i + 1}") for i, r in enumerate(rules_raw)) if rules_raw else (Rule(),)
    return Account(
        name=name,
        host=host,
        port=port,
        tls=tls,
        user=_text(raw, "user", where, required=True) or "",
        secret=secret,
        folders=tuple(dict.fromkeys(f.strip() for f in folders)),
        rules=rules,
        ca_file=Path(ca_file).expanduser() if (ca_file := _text(raw, "ca_file", where)) else None,
    )


def _rule(raw: dict[str, Any], where: str) -> Rule:
    unknown = set(raw) - _RULE_KEYS
    if unknown:
        raise MailConfigError(f"{where}: unknown key(s) {sorted(map(str, unknown))}")
    has_attachment = raw.get("has_attachment")
    if has_attachment is not None and not isinstance(has_attachment, bool):
        raise MailConfigError(f"{where}: has_attachment must be true or false")
    since = raw.get("since")
    if isinstance(since, datetime):
        since = since.date()
    elif isinstance(since, str):
        try:
            since = date.fromisoformat(since)
        except ValueError:
            raise MailConfigError(f"{where}: since must be a date such as 2024-01-31") from None
    elif since is not None and not isinstance(since, date):
        raise MailConfigError(f"{where}: since must be a date such as 2024-01-31")
    after = _choice(raw, "after", AFTER_ACTIONS, "none", where)
    move_to = _text(raw, "move_to", where, required=after == "move")
    if move_to and after != "move":
        raise MailConfigError(f"{where}: move_to is only for after = move")
    return Rule(
        name=_text(raw, "name", where) or f"rule{where.rpartition(' ')[2]}",
        from_contains=_text(raw, "from", where),
        to_contains=_text(raw, "to", where),
        subject_contains=_text(raw, "subject", where),
        has_attachment=has_attachment,
        since=since,
        process=_choice(raw, "process", PROCESS_MODES, "attachments", where),
        after=after,
        move_to=move_to,
    )
