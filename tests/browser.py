"""A real browser for the tests: find (or install) Chromium, drive it with Selenium,
and run a web server process (`registry ui`) for it to visit.

- ``find_chromium()`` gives the system Chromium and its chromedriver. When they are
  missing and this process runs as root on a machine with apt-get, it installs them
  (``apt-get install -y --no-install-recommends chromium chromium-driver``, then
  ``apt-get update`` and once more if that failed) and says how long that took. It
  raises ``BrowserUnavailable`` saying exactly why when there is no browser to be had;
  the answer (either one) is kept for the whole session, so apt runs at most once.
  ``REGISTRY_TEST_CHROMIUM`` and ``REGISTRY_TEST_CHROMEDRIVER`` name other binaries.
- ``make_driver()`` starts a headless Chromium (1280x900, so screenshots always have
  one size) through that chromedriver. Selenium Manager never runs: the driver's path
  is given, and ``SE_OFFLINE=true`` forbids it any download all the same.
- ``ServerProcess`` runs a command serving HTTP on a free loopback port, waits until
  it answers and stops it; ``ui_server()`` makes one running ``registry ui``.

Selenium is imported only inside these functions, so importing this module needs
nothing but the standard library.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
APT_PACKAGES = ("chromium", "chromium-driver")
WINDOW = (1280, 900)
#: Chromium's switches: headless, no sandbox (root, containers), nothing that would
#: reach the network or slow the start (sync, extensions, component updates).
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-sync",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
    f"--window-size={WINDOW[0]},{WINDOW[1]}",
)


class BrowserUnavailable(Exception):
    """No Chromium with a chromedriver can be had here; the message says why."""


@dataclass(frozen=True)
class Browser:
    chromium: str
    chromedriver: str
    #: Seconds apt-get took to install them, None when they were there already.
    install_seconds: float | None = None


_found: Browser | BrowserUnavailable | None = None


def find_chromium(log: Callable[[str], None] = print) -> Browser:
    """The Chromium and chromedriver to use, installed with apt-get if need be (once
    per session; ``log`` hears how long it took). Raises BrowserUnavailable."""
    global _found
    if _found is None:
        try:
            _found = _find_or_install(log)
        except BrowserUnavailable as error:
            _found = error
    if isinstance(_found, BrowserUnavailable):
        raise _found
    return _found


def _wanted() -> tuple[str, str]:
    return (
        os.environ.get("REGISTRY_TEST_CHROMIUM") or CHROMIUM,
        os.environ.get("REGISTRY_TEST_CHROMEDRIVER") or CHROMEDRIVER,
    )


def _present() -> tuple[str, str] | None:
    paths = _wanted()
    if all(os.path.isfile(p) and os.access(p, os.X_OK) for p in paths):
        return paths
    return None


def _find_or_install(log: Callable[[str], None]) -> Browser:
    present = _present()
    if present:
        return Browser(*present)
    missing = " and ".join(p for p in _wanted() if not os.access(p, os.X_OK)) + " missing"
    apt = shutil.which("apt-get")
    if apt is None:
        raise BrowserUnavailable(
            f"{missing} and there is no apt-get to install {' '.join(APT_PACKAGES)} with"
        )
    if os.geteuid() != 0:
        raise BrowserUnavailable(
            f"{missing} and not running as root, so "
            f"`apt-get install {' '.join(APT_PACKAGES)}` cannot be run"
        )
    install = [apt, "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    log(f"browser tests: {missing}, running `{' '.join(install)}`")
    start = time.monotonic()
    result = _run(install)
    if result.returncode != 0:
        first = _failure(install, result)
        log(f"browser tests: {first}; running `apt-get update` and installing again")
        update = _run([apt, "update"])
        if update.returncode != 0:
            raise BrowserUnavailable(f"{first}; then {_failure([apt, 'update'], update)}")
        result = _run(install)
        if result.returncode != 0:
            raise BrowserUnavailable(_failure(install, result) + " (after `apt-get update` too)")
    seconds = time.monotonic() - start
    present = _present()
    if not present:
        raise BrowserUnavailable(
            f"`{' '.join(install)}` succeeded but {' or '.join(_wanted())} is still missing"
        )
    log(f"browser tests: installed {' and '.join(APT_PACKAGES)} with apt-get in {seconds:.1f} s")
    return Browser(*present, install_seconds=seconds)


def _run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        return subprocess.run(
            list(command), env=env, capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as error:
        stderr = error.stderr.decode(errors="replace") if error.stderr else ""
        return subprocess.CompletedProcess(list(command), -1, "", stderr + "\ntimed out")


def _failure(command: Sequence[str], result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr or "").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "(nothing on stderr)"
    return f"`{' '.join(command)}` failed (exit {result.returncode}): {last}"


def make_driver(browser: Browser) -> Chrome:
    """A headless Chromium of WINDOW's size, driven through the given chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager may never download a thing
    options = Options()
    options.binary_location = browser.chromium
    for arg in CHROMIUM_ARGS:
        options.add_argument(arg)
    # Console messages, so tests can fail on a page's script or resource errors.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=browser.chromedriver, log_output=subprocess.DEVNULL)
    driver = webdriver.Chrome(options=options, service=service)
    # --window-size counts the (invisible) window frame: fix the page's viewport itself.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False},
    )
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


# -- a server process -----------------------------------------------------------------


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``command`` (its ``{port}`` replaced by a free port) serving HTTP on 127.0.0.1.

    ``start()`` returns once GET / answers (any status), or raises RuntimeError with
    the server's output if it exits first or does not answer within ``timeout``
    seconds. ``stop()`` sends SIGTERM, then SIGKILL after 5 s. Output goes to a file,
    never a pipe that could fill up. Also a context manager.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.port = free_port()
        self.command = [part.replace("{port}", str(self.port)) for part in command]
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.timeout = timeout
        self.process: subprocess.Popen | None = None
        self.startup_seconds = 0.0
        self._started = 0.0
        self._output = tempfile.NamedTemporaryFile(prefix="server-", suffix=".log", delete=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def output(self, lines: int = 40) -> str:
        """The last ``lines`` lines the server wrote (stdout and stderr)."""
        text = Path(self._output.name).read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def start(self) -> ServerProcess:
        """Launch the server and wait until it answers."""
        self.launch()
        return self.wait()

    def launch(self) -> None:
        """Start the process, not waiting for it (several can start at once)."""
        self._started = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    def wait(self) -> ServerProcess:
        """Return once GET / answers; RuntimeError if the server dies or times out."""
        assert self.process is not None, "launch() first"
        deadline = self._started + self.timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"`{' '.join(self.command)}` exited ({code}) before answering:\n"
                    + self.output()
                )
            if self._answers():
                break
            if time.monotonic() > deadline:
                output = self.output()
                self.stop()
                raise RuntimeError(
                    f"`{' '.join(self.command)}` did not answer GET {self.url()} within "
                    f"{self.timeout:.0f} s:\n" + output
                )
            time.sleep(0.05)
        self.startup_seconds = time.monotonic() - self._started
        return self

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url("/"), timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered, if not with 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """SIGTERM, and SIGKILL if it is still there 5 s later."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        """Stop it and delete its output file."""
        self.stop()
        self._output.close()
        Path(self._output.name).unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies (even by SIGKILL),
    so a killed pytest leaves no server behind."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def registry_exe() -> str:
    """The `registry` console script of this interpreter's environment."""
    here = Path(sys.executable).with_name("registry")
    found = str(here) if here.is_file() else shutil.which("registry")
    if not found:
        raise RuntimeError("the `registry` command is not installed")
    return found


def ui_server(
    home: str | os.PathLike[str],
    *,
    allow_edits: bool = False,
    python_path: Sequence[str | os.PathLike[str]] = (),
    timeout: float = 30.0,
) -> ServerProcess:
    """A (not yet started) ``registry ui`` on a free loopback port serving the local
    registry in ``home``. ``python_path`` is put first on its PYTHONPATH (so it can
    import the architectures the versions name)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REGISTRY_DATABASE_URL", "REGISTRY_STORAGE_URL")
    }
    env["REGISTRY_HOME"] = str(home)
    paths = [str(p) for p in python_path]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    command = [registry_exe(), "ui", "--host", "127.0.0.1", "--port", "{port}"]
    if allow_edits:
        command.append("--allow-edits")
    return ServerProcess(command, env=env, timeout=timeout)
