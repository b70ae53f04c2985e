"""A private Dovecot IMAP server for the mail-source tests: a real server, never the system's.

Everything lives in one throwaway folder: the configuration (no ``/etc/dovecot`` is read),
``base_dir`` and ``state_dir`` (sockets, pid file), the Maildirs and a passwd-file of test users.
It listens on free ports of 127.0.0.1 only; plaintext login is allowed there (the mail source
allows plain IMAP to 127.0.0.1 only), and implicit TLS on a second port uses a self-signed
certificate made on the spot. Messages are put in with IMAP APPEND (``imaplib``), as a mail
client would.
"""

from __future__ import annotations

import contextlib
import http.server
import imaplib
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path

import psutil

from background_tasks.sources.mail.imap import quoted
from tests.support import die_with_parent, free_port, wait_until

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"


def _mail_owner() -> tuple[int, int, str]:
    """The uid/gid the mail processes run as: root may not own mail, so it runs as ``nobody``."""
    if os.getuid() != 0:
        me = pwd.getpwuid(os.getuid())
        return me.pw_uid, me.pw_gid, me.pw_name
    nobody = pwd.getpwnam("nobody")
    return nobody.pw_uid, nobody.pw_gid, "dovenull"


class ImapServer:
    """``start``/``stop``/``kill`` a Dovecot of its own; ``add_user``, ``append``, ``connect`` for tests."""

    def __init__(
        self,
        root: Path | None = None,
        users: dict[str, str] | None = None,
        tls: bool = False,
        oauth2_url: str | None = None,
    ) -> None:
        if not Path(DOVECOT).exists():
            raise RuntimeError(
                "dovecot is not installed; run `scripts/setup.sh --dev` or apt-get install dovecot-imapd"
            )
        # Its own folder in /tmp by default: Dovecot's unprivileged processes must reach it, and pytest's
        # tmp_path sits below /tmp/pytest-of-<user>, which every pytest run (of anyone) resets to 0700.
        self.owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="midas-imap-")) / "srv" if root is None else root
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.tls = tls
        #: an OAuth2 introspection endpoint: Dovecot then also takes XOAUTH2 and OAUTHBEARER, checking tokens there
        self.oauth2_url = oauth2_url
        self.users = dict(users or {"alice": "secret-a"})
        self.process: subprocess.Popen | None = None
        self.uid, self.gid, self.login_user = _mail_owner()

    # -- configuration -----------------------------------------------------------------------

    @property
    def conf_path(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def cert_path(self) -> Path:
        return self.root / "cert.pem"

    def _write_users(self) -> None:
        lines = [
            f"{user}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{self.root / 'mail' / user}\n"
            for user, password in self.users.items()
        ]
        path = self.root / "users"
        path.write_text("".join(lines))
        os.chmod(path, 0o644)

    def _make_cert(self) -> None:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                "-keyout", str(self.root / "key.pem"), "-out", str(self.cert_path),
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
        os.chmod(self.root / "key.pem", 0o600)

    def _write_conf(self) -> None:
        root = self.root
        own = os.getuid() != 0
        user = pwd.getpwuid(os.getuid()).pw_name
        ssl = f"ssl = yes\nssl_cert = <{self.cert_path}\nssl_key = <{root / 'key.pem'}\n" if self.tls else "ssl = no\n"
        oauth2 = (
            f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {root / 'oauth2.conf'}\n}}\n"
        )
        imaps = f"  inet_listener imaps {{\n    address = 127.0.0.1\n    port = {self.tls_port}\n    ssl = yes\n  }}\n"
        self.conf_path.write_text(
            f"base_dir = {root / 'run'}\n"
            f"state_dir = {root / 'state'}\n"
            f"log_path = {root / 'dovecot.log'}\n"
            "protocols = imap\n"
            "listen = 127.0.0.1\n"
            "disable_plaintext_auth = no\n"
            f"auth_mechanisms = plain login{' xoauth2 oauthbearer' if self.oauth2_url else ''}\n"
            "auth_failure_delay = 0\n"
            f"default_login_user = {user if own else 'dovenull'}\n"
            f"default_internal_user = {user if own else 'dovecot'}\n"
            f"mail_location = maildir:{root / 'mail'}/%u\n"
            "first_valid_uid = 1\n"
            f"{ssl}"
            "passdb {\n"
            f"  driver = passwd-file\n  args = scheme=PLAIN username_format=%u {root / 'users'}\n"
            + ("  mechanisms = plain login\n" if self.oauth2_url else "")
            + "}\n"
            + (oauth2 if self.oauth2_url else "")
            + "userdb {\n"
            f"  driver = passwd-file\n  args = username_format=%u {root / 'users'}\n"
            "}\n"
            "service imap-login {\n"
            f"  inet_listener imap {{\n    address = 127.0.0.1\n    port = {self.port}\n  }}\n"
            + (imaps if self.tls else "  inet_listener imaps {\n    port = 0\n  }\n")
            + "}\n"
            "service stats {\n  unix_listener stats-writer {\n    mode = 0666\n  }\n}\n"
            # no growing delay (2, 4, 8 s) after the tests' deliberate failed logins
            "service anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}\n"
            "namespace inbox {\n  inbox = yes\n  separator = /\n"
            "  mailbox Trash {\n    special_use = \\Trash\n  }\n}\n"
        )

    # -- life --------------------------------------------------------------------------------

    def start(self) -> ImapServer:
        first = not self.conf_path.exists()
        if first:
            self.root.mkdir(parents=True, exist_ok=True)
            for sub in ("mail", "state", "run"):
                (self.root / sub).mkdir(exist_ok=True)
            # the mail and auth processes run as other users: they must reach their files through the tree
            os.chmod(self.root, 0o711)
            if self.owns_root:
                os.chmod(self.root.parent, 0o711)
            os.chown(self.root / "mail", self.uid, self.gid)
            if self.tls:
                self._make_cert()
            self._write_users()
            if self.oauth2_url:
                (self.root / "oauth2.conf").write_text(
                    f"introspection_mode = post\nintrospection_url = {self.oauth2_url}\n"
                    "username_attribute = username\nactive_attribute = active\nactive_value = true\n"
                    "force_introspection = yes\n"
                )
                os.chmod(self.root / "oauth2.conf", 0o644)
            self._write_conf()
        self.process = subprocess.Popen(
            [DOVECOT, "-c", str(self.conf_path), "-F"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "dovecot.stderr", "ab"),  # noqa: SIM115 - the child keeps it
            preexec_fn=die_with_parent,
        )
        wait_until(self._answers, 20, what=f"dovecot on port {self.port} (see {self.root / 'dovecot.log'})")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"dovecot exited: {(self.root / 'dovecot.stderr').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                return sock.recv(100).startswith(b"* OK")
        except OSError:
            return False

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): Dovecot closes its clients' connections."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._wait_port_free()

    def kill(self) -> None:
        """SIGKILL the master; its children notice and go too."""
        if self.process and self.process.poll() is None:
            children = psutil.Process(self.process.pid).children(recursive=True)  # imap, imap-login, auth ...
            self.process.kill()
            self.process.wait(5)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        self._wait_port_free()

    def close(self) -> None:
        """Kill it and remove its folder (when it made its own)."""
        self.kill()
        if self.owns_root:
            shutil.rmtree(self.root.parent, ignore_errors=True)

    def _wait_port_free(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                return
            time.sleep(0.1)

    # -- mail --------------------------------------------------------------------------------

    def connect(self, user: str = "alice") -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=30)
        password = self.users[user]
        if (user + password).isascii():
            client.login(user, password)
        else:  # LOGIN takes ASCII only
            client.authenticate("PLAIN", lambda _challenge: f"\0{user}\0{password}".encode())
        return client

    def append(self, messages: Iterable[bytes], folder: str = "INBOX", user: str = "alice") -> int:
        """Put ``messages`` into ``folder`` (created when missing); returns how many."""
        ended = len(self.sessions())
        client = self.connect(user)
        try:
            if folder != "INBOX":
                client.create(quoted(folder))  # modified UTF-7: "Überweisungen" as a server keeps it
            count = 0
            for message in messages:
                typ, data = client.append(quoted(folder), None, None, message)
                if typ != "OK":
                    raise RuntimeError(f"APPEND to {folder} failed: {data}; server log: {self.log_tail()}")
                count += 1
            return count
        finally:
            client.logout()
            self.wait_sessions(ended + 1)  # so that a test counting the sessions after this one counts only its own

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return (self.root / "dovecot.log").read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def sessions(self) -> list[dict[str, int]]:
        """Dovecot's counters of each IMAP session that ended, oldest first (its logout lines: ``out=``,
        ``hdr_count=``, ``body_count=``, ``body_bytes=`` ...): what the server itself says it sent."""
        lines = [x for x in self.log_tail(10**8).splitlines() if ": Disconnected: Logged out " in x]
        return [{key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", line)} for line in lines]

    def wait_sessions(self, count: int) -> list[dict[str, int]]:
        """``sessions()`` once at least ``count`` have ended (Dovecot logs a logout just after the client left)."""
        wait_until(lambda: len(self.sessions()) >= count, 10, what=f"{count} IMAP session(s) logged")
        return self.sessions()

    def uids(self, folder: str = "INBOX", user: str = "alice", criteria: str = "ALL") -> list[int]:
        ended = len(self.sessions())
        client = self.connect(user)
        try:
            typ, data = client.select(quoted(folder))
            if typ != "OK":
                raise RuntimeError(f"folder {folder} cannot be opened: {data}")
            _typ, data = client.uid("SEARCH", None, criteria)
            return [int(u) for u in data[0].split()]
        finally:
            client.logout()
            self.wait_sessions(ended + 1)


class TokenServer:
    """A tiny OAuth2 introspection endpoint (RFC 7662) on a free port of 127.0.0.1, for Dovecot's oauth2 passdb.

    ``tokens`` maps a valid token to its user; anything else is ``{"active": false}``. ``asked``
    holds each token it was asked about, so a test sees that Dovecot really checked there.
    """

    def __init__(self, tokens: dict[str, str] | None = None) -> None:
        self.tokens = dict(tokens or {})
        self.asked: list[str] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the name http.server calls
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8"))
                token = (form.get("token") or [""])[0]
                owner.asked.append(token)
                user = owner.tokens.get(token)
                body = json.dumps({"active": True, "username": user} if user else {"active": False}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
