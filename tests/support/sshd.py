"""A throwaway OpenSSH server on loopback, the keys to log in to it, and the login user."""

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from environments.connectors.ssh import no_delay
from tests.support.ports import free_port, wait_for_port

SSH_TEST_USER = "pa-ssh-test"


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def _ensure_test_user() -> str:
    """Log in as a dedicated user whose shell is /bin/sh (root's bashrc makes every login
    slow); when not root, sshd only lets the user running it in."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid()).pw_name
    try:
        pwd.getpwnam(SSH_TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", SSH_TEST_USER], check=True)
    # useradd leaves the account locked, and sshd refuses key logins to a locked account.
    subprocess.run(["usermod", "-p", "*", SSH_TEST_USER], check=True)
    return SSH_TEST_USER


@dataclass
class SSHServer:
    """A throwaway sshd on 127.0.0.1 and everything needed to log in to it."""

    port: int
    user: str
    client_key: Path
    host_public_key: str
    known_hosts: Path
    scripts: Path  # readable and writable by the login user
    process: subprocess.Popen | None = field(default=None, repr=False)
    host: str = "127.0.0.1"

    def script(self, name: str, body: str) -> Path:
        """Write an executable shell script the login user can run."""
        path = self.scripts / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
        return path


def start_sshd(base: Path) -> SSHServer:
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd):
        raise RuntimeError("sshd is not installed (Debian package openssh-server; .ci/run installs it)")
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    host_public_key = keygen(base / "host_key")
    client_public_key = keygen(base / "client_key")
    (base / "authorized_keys").write_text(client_public_key + "\n")
    (base / "authorized_keys").chmod(0o644)
    scripts = Path(tempfile.mkdtemp(prefix="pa-ssh-scripts-"))
    scripts.chmod(0o777)
    user = _ensure_test_user()
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {base / 'host_key'}",
                f"AuthorizedKeysFile {base / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                f"PidFile {base / 'sshd.pid'}",
                "LogLevel ERROR",
                "MaxStartups 1000:30:1000",
                "MaxSessions 1000",
                f"AllowUsers {user}",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=open(base / "sshd.log", "wb"))
    wait_for_port(port)
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n")
    return SSHServer(
        port=port,
        user=user,
        client_key=base / "client_key",
        host_public_key=host_public_key,
        known_hosts=known_hosts,
        scripts=scripts,
        process=process,
    )


def stop_sshd(server: SSHServer) -> None:
    if server.process and server.process.poll() is None:
        server.process.terminate()
        server.process.wait(timeout=10)
    shutil.rmtree(server.scripts, ignore_errors=True)


def connect(server: SSHServer) -> paramiko.SSHClient:
    """A paramiko client logged in to the test sshd, the host key checked against its
    known_hosts file. The caller closes it."""
    client = paramiko.SSHClient()
    client.load_host_keys(str(server.known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        server.host,
        port=server.port,
        username=server.user,
        key_filename=str(server.client_key),
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    no_delay(client)  # as the connector does: ~40 ms less per call
    return client
