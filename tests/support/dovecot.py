"""A real Dovecot IMAP server on 127.0.0.1 for tests and benchmarks, configured inside a temp dir.

Dovecot drops privileges: its auth process runs as the `dovecot` user and mail is owned by the
userdb's uid, so the directory must be world-readable and the mail dir owned by that uid (see
MACHINE-NOTES.md). As root, mail belongs to uid 1000; as anyone else, to the caller, with Dovecot's
internal users set to the caller too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from pydantic import SecretStr

from connectors.imap_settings import ImapMailbox

USER = "test"
PASSWORD = "secret"
MAIL_UID = 1000


@dataclass(frozen=True)
class DovecotServer:
    """A running server and how to reach it."""

    host: str
    port: int
    user: str
    password: str
    root: Path
    tls_port: int = 0  # implicit TLS (imaps); 0 when trustme is missing
    ca_file: Path | None = None  # the throwaway CA that signed the server's certificate

    def client(self) -> IMAPClient:
        """A logged-in imapclient connection (close it with `logout()`)."""
        client = IMAPClient(self.host, port=self.port, ssl=False, timeout=30)
        client.login(self.user, self.password)
        return client

    def mailbox(self, **overrides: Any) -> ImapMailbox:
        """Settings that reach this server over plain IMAP."""
        fields: dict[str, Any] = {
            "name": "test",
            "host": self.host,
            "port": self.port,
            "ssl": False,
            "username": self.user,
            "password": SecretStr(self.password),
            "timeout_seconds": 10,
        }
        fields.update(overrides)
        return ImapMailbox(**fields)


def dovecot_binary() -> str | None:
    """Path of the `dovecot` binary, or None when it is not installed."""
    return shutil.which("dovecot") or next(
        (path for path in ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot") if os.access(path, os.X_OK)), None
    )


def make_root(prefix: str = "triage-dovecot-") -> Path:
    """A fresh directory for a server: in RAM (/dev/shm) when there is room, else under /tmp.

    Not pytest's tmp_path: its parents are 0700 and Dovecot's auth process must read the users file.
    RAM also spares the disk: removing tens of thousands of mail files on a disk mounted with
    `discard` took 15 s here, against well under a second on tmpfs.
    """
    shm = Path("/dev/shm")
    base: str | None = None
    if shm.is_dir() and os.access(shm, os.W_OK):
        stats = os.statvfs(shm)
        if stats.f_bavail * stats.f_frsize > 2_000_000_000:
            base = str(shm)
    root = Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    root.chmod(0o755)
    return root


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(root: Path, port: int, tls_port: int) -> str:
    if os.getuid() == 0:
        privileges = ""
    else:
        me = pwd.getpwuid(os.getuid()).pw_name
        privileges = (
            f"default_internal_user = {me}\ndefault_internal_group = {me}\n"
            f"default_login_user = {me}\nfirst_valid_uid = 1\n"
        )
    chroot = "" if os.getuid() == 0 else "  chroot =\n"
    return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
{"ssl = yes" if tls_port else "ssl = no"}
{f"ssl_cert = <{root}/cert.pem" if tls_port else ""}
{f"ssl_key = <{root}/key.pem" if tls_port else ""}
disable_plaintext_auth = no
auth_mechanisms = plain login
# Failed logins answer at once (default: 2 s) so bad-credential tests stay fast.
auth_failure_delay = 0
login_trusted_networks = 127.0.0.0/8
mail_location = maildir:~/Maildir
mail_fsync = never
{privileges}
passdb {{
  driver = passwd-file
  args = {root}/users
}}
userdb {{
  driver = passwd-file
  args = {root}/users
}}
service anvil {{
{chroot}  # No growing penalty after the deliberate failed logins of the bad-credential tests.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
  }}
}}
protocol imap {{
  mail_max_userip_connections = 50
}}
"""


@contextmanager
def run_dovecot(root: Path) -> Iterator[DovecotServer]:
    """Start Dovecot with its config, state and mail under `root`; stop it (SIGTERM) on exit.

    Every parent of `root` must be searchable by the `dovecot` user: use `make_root()`. Raises
    RuntimeError when the binary is missing or the server does not start.
    """
    binary = dovecot_binary()
    if binary is None:
        raise RuntimeError("dovecot not installed: apt-get install dovecot-imapd")
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    mail_uid = MAIL_UID if os.getuid() == 0 else os.getuid()
    mail_gid = MAIL_UID if os.getuid() == 0 else os.getgid()
    home = root / "mail" / USER
    home.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(root / "mail", mail_uid, mail_gid)
        os.chown(home, mail_uid, mail_gid)
    (root / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{mail_uid}:{mail_gid}::{home}\n")
    port = free_port()
    tls_port, ca_file = _make_certificates(root)
    config = root / "dovecot.conf"
    config.write_text(_config(root, port, tls_port))
    # Dovecot keeps the real clock when CI runs the suite under libfaketime: its processes change user,
    # which libfaketime's shared memory does not survive (logins then hang). A mail server whose clock
    # is not ours is what the connector meets anyway; tests compare with the server's own dates.
    environment = {k: v for k, v in os.environ.items() if k not in {"LD_PRELOAD", "FAKETIME"}}
    process = subprocess.Popen(
        [binary, "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment
    )
    try:
        _wait_for_port(port, process, root)
        yield DovecotServer(
            host="127.0.0.1",
            port=port,
            user=USER,
            password=PASSWORD,
            root=root,
            tls_port=tls_port,
            ca_file=ca_file,
        )
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def _make_certificates(root: Path) -> tuple[int, Path | None]:
    """A CA and a server certificate for 127.0.0.1 (trustme); (0, None) without trustme."""
    try:
        import trustme
    except ImportError:
        return 0, None
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    certificate.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
    certificate.private_key_pem.write_to_path(str(root / "key.pem"))
    (root / "key.pem").chmod(0o644)  # read by Dovecot's master as root, or by the caller otherwise
    authority.cert_pem.write_to_path(str(root / "ca.pem"))
    return free_port(), root / "ca.pem"


def _wait_for_port(port: int, process: subprocess.Popen[bytes], root: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            log = root / "dovecot.log"
            detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"dovecot exited with {process.returncode}: {stderr}{detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"dovecot did not listen on 127.0.0.1:{port} within 15 s")


def append_messages(server: DovecotServer, folder: str, messages: list[bytes], *, chunk: int = 200) -> None:
    """Append raw mails to `folder` (created if missing), many per command (MULTIAPPEND)."""
    client = server.client()
    try:
        if not client.folder_exists(folder):
            client.create_folder(folder)
        for start in range(0, len(messages), chunk):
            client.multiappend(folder, messages[start : start + chunk])
    finally:
        client.logout()


def reset_uidvalidity(server: DovecotServer, folder: str, messages: list[bytes]) -> None:
    """Delete and recreate `folder` with `messages`: Dovecot gives it a new UIDVALIDITY."""
    client = server.client()
    try:
        before = client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]
        client.delete_folder(folder)
        client.create_folder(folder)
        after = client.folder_status(folder, [b"UIDVALIDITY"])[b"UIDVALIDITY"]
        if after == before:  # UIDVALIDITY is a timestamp in Dovecot: a fast recreate may reuse it
            time.sleep(1.1)
            client.delete_folder(folder)
            client.create_folder(folder)
    finally:
        client.logout()
    append_messages(server, folder, messages)
