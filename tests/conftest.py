"""Shared fixtures: a registry in a temporary folder, real checkpoint files, the CLI.

Backends: a test module that sets ``BACKENDS = ("local", "team")`` runs each test
using ``home`` (or ``reg``) once per backend, ids ``test_x[local]`` and
``test_x[team]``: "local" is SQLite and a folder under REGISTRY_HOME, "team" is
PostgreSQL and an S3 bucket (SeaweedFS), both real servers started on loopback for
the session (tests/servers.py). Tests marked ``local_only`` run on "local" alone.
Other modules stay local-only and are not parametrized.
"""

from __future__ import annotations

import inspect
import itertools
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from servers import PostgresServer, SeaweedServer

from registry import Registry

REGISTRY_EXE = shutil.which("registry", path=str(Path(sys.executable).parent)) or shutil.which(
    "registry"
)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Architecture signatures are cached in a folder of this test session, not ~/.cache."""
    os.environ["REGISTRY_CACHE_DIR"] = str(tmp_path_factory.mktemp("registry-cache"))


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to fetch pretrained weights fails the test instead of downloading."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)


# -- servers and backends ---------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "local_only: about the local layout (registry.db, HOME/objects, file modes, "
        "SQLite fast paths); runs on the local backend only in BACKENDS modules",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize `backend` (used by `home`, so by `reg`) in modules that set BACKENDS."""
    backends = getattr(metafunc.module, "BACKENDS", None)
    if backends is None or "backend" not in metafunc.fixturenames:
        return
    if metafunc.definition.get_closest_marker("local_only"):
        backends = ("local",)
    metafunc.parametrize("backend", list(backends), indirect=True)


class MissingServerWarning(UserWarning):
    """A server the tests need cannot be started here: its tests are skipped."""


def _unavailable(server: str, what: str) -> None:
    message = f"no {server} server can be started here, so tests needing one SKIP: {what}"
    warnings.warn(MissingServerWarning(message), stacklevel=2)
    pytest.skip(message)


#: The session's servers, for the terminal summary (how long each took to start, stop).
_SERVERS: dict[str, PostgresServer | SeaweedServer] = {}


def pytest_terminal_summary(terminalreporter) -> None:
    if _SERVERS:
        terminalreporter.write_line(
            "test servers: "
            + "; ".join(
                f"{name} started in {server.startup_seconds:.2f} s, "
                f"stopped in {server.stop_seconds:.2f} s"
                for name, server in _SERVERS.items()
            )
        )


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the session (tests/servers.py: PostgresServer)."""
    missing = PostgresServer.missing()
    if missing:
        _unavailable("PostgreSQL", missing)
    with PostgresServer() as server:
        _SERVERS["postgresql"] = server
        yield server


@pytest.fixture(scope="session")
def seaweed_server():
    """A SeaweedFS server with its S3 gateway for the session (servers.SeaweedServer)."""
    missing = SeaweedServer.missing()
    if missing:
        _unavailable("SeaweedFS (S3)", missing)
    with SeaweedServer() as server:
        _SERVERS["seaweedfs"] = server
        yield server


@pytest.fixture(scope="session")
def team_bucket(seaweed_server: SeaweedServer) -> str:
    """The session's bucket; each team registry lives under a prefix of its own."""
    return seaweed_server.new_bucket()


_prefixes = itertools.count()


@pytest.fixture
def team_env(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    seaweed_server: SeaweedServer,
    team_bucket: str,
) -> dict[str, str]:
    """The environment of a fresh, empty team registry: a new PostgreSQL database,
    a new prefix in the session bucket, the admin S3 identity. Not applied: pass it to
    run_cli(env=...) or monkeypatch.setenv each item (the `home` fixture does so in
    team mode)."""
    prefix = f"{next(_prefixes):04d}-{re.sub(r'[^A-Za-z0-9_.-]+', '-', request.node.name)[:60]}"
    return {
        "REGISTRY_DATABASE_URL": postgres_server.new_database(),
        "REGISTRY_STORAGE_URL": f"s3://{team_bucket}/{prefix.strip('-')}/",
        **seaweed_server.env(),
    }


@pytest.fixture
def reader_env(team_env: dict[str, str], seaweed_server: SeaweedServer) -> dict[str, str]:
    """The same registry as team_env with the S3 identity that may only read and list.
    (The database URL is unchanged: PostgresServer.url_for gives it as another role.)"""
    return {**team_env, **seaweed_server.env(reader=True)}


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The backend, "local" or "team": parametrized in modules that set BACKENDS, else "local"."""
    return getattr(request, "param", "local")


@pytest.fixture
def home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, request: pytest.FixtureRequest
) -> Path:
    """An empty registry home, also exported as REGISTRY_HOME for the CLI.

    On the team backend the catalogue and the tensors are elsewhere (team_env, set in
    the environment); the home stays a folder of this test, and so does
    REGISTRY_CACHE_DIR (the session sets it for all tests), so each test starts with
    an empty pack cache."""
    path = tmp_path / "registry-home"
    monkeypatch.setenv("REGISTRY_HOME", str(path))
    if backend == "team":
        env = request.getfixturevalue("team_env")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "REGISTRY_CACHE_MAX_SIZE"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("REGISTRY_CACHE_DIR", str(tmp_path / "registry-cache"))
    else:
        monkeypatch.delenv("REGISTRY_DATABASE_URL", raising=False)
        monkeypatch.delenv("REGISTRY_STORAGE_URL", raising=False)
    return path


@pytest.fixture
def reg(home: Path) -> Registry:
    registry = Registry(home=home)
    yield registry
    registry.close()


def make_model(arch: str, seed: int = 0, **kwargs) -> torch.nn.Module:
    """A torchvision model with deterministic random weights (never downloaded)."""
    torch.manual_seed(seed)
    builder = torchvision.models.get_model_builder(arch)
    params = inspect.signature(builder).parameters
    extra = {"weights_backbone": None} if "weights_backbone" in params else {}
    return torchvision.models.get_model(arch, weights=None, **extra, **kwargs).eval()


@pytest.fixture(scope="session")
def resnet18_state() -> dict[str, torch.Tensor]:
    return make_model("resnet18").state_dict()


@pytest.fixture
def resnet18_pth(tmp_path: Path, resnet18_state) -> Path:
    path = tmp_path / "model.pth"
    torch.save(resnet18_state, path)
    return path


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), key


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the installed `registry` command in a subprocess."""
    assert REGISTRY_EXE, "the `registry` command is not installed"
    result = subprocess.run(
        [REGISTRY_EXE, *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"registry {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
        )
    return result


#: Runs CLI commands in one process, then prints which heavy packages they imported
#: (`python -c IN_PROCESS.format(commands=repr([[...], ...]))`).
IN_PROCESS = r"""
import sys
from registry.cli import cli
for args in ({commands}):
    try:
        cli(args, prog_name="registry")
    except SystemExit as exit:
        assert not exit.code, (args, exit.code)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "sqlalchemy", "alembic"))
print("imported:" + ",".join(heavy))
"""


_PUSHER = r"""
import sys, time, torch, torchvision
from registry import Registry
home, url, seed, start = sys.argv[1], sys.argv[2] or None, int(sys.argv[3]), float(sys.argv[4])
states = []
for i in range(3):
    torch.manual_seed(seed * 100 + i)
    states.append(torchvision.models.mobilenet_v3_small(weights=None).state_dict())
while time.time() < start:
    time.sleep(0.005)
reg = Registry(home=home, database_url=url)
for state in states:
    print(reg.push(state, "shared", arch="mobilenet_v3_small").ref, flush=True)
"""


def push_from_two_processes(home: Path, database_url: str = "") -> list[str]:
    """Two processes each push 3 different state dicts to one name, starting together.

    Returns the refs they printed, sorted; fails if either process failed.
    """
    import time

    start = time.time() + 8  # both are past their torch import by then
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PUSHER, str(home), database_url, str(seed), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_out, err) in zip(procs, outputs):
        assert p.returncode == 0, err
    return sorted(line for out, _ in outputs for line in out.split())
