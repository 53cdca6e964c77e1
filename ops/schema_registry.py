"""A real schema registry speaking the Confluent API, without a Docker engine.

Apicurio Registry (Apache-2.0) publishes its finished Quarkus application on Maven Central (the
``all`` tar.gz of ``io.apicurio:apicurio-registry-app``); it serves the Confluent Schema Registry
API at ``/apis/ccompat/v7`` and runs on the Java 17 the broker already needs. It is fetched once
with ``mvn dependency:copy`` (Maven keeps it in the local repository) and unpacked into a cache
directory (default ``~/.cache/sentinel-stream/apicurio-<version>``); later starts run offline
from that cache.

Each registry lives in a *state directory* holding its port (chosen once, kept across restarts,
like the broker's), its log and a ``registry.json`` describing the running process, so
``status``/``stop`` from another process find it. Storage is in memory: a restarted registry has
forgotten every schema (and hands out ids from 1 again).

Two differences from Confluent's own registry matter to callers: the default compatibility is
NONE (Confluent: BACKWARD), so Sentinel sets it per subject when it registers; and
``GET /config/{subject}`` without a subject config returns the global value.

Nothing here knows about pytest or the CLI: both call :class:`LocalRegistry`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ops.kafka_broker import (
    JAVA_HINT,
    fetch_with_maven,
    free_ports,
    port_free,
    read_running_state,
    runs_with_argument,
    terminate,
    write_atomically,
)
from schemas.errors import BrokerError

APICURIO_VERSION = "2.6.13.Final"
ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
RUNNER_JAR = f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sentinel-stream" / f"apicurio-{APICURIO_VERSION}"
DEFAULT_STATE_DIR = Path(".sentinel") / "registry"
CCOMPAT_PATH = "/apis/ccompat/v7"

# ~200 MB resident; the serial collector and C1 only keep the start at 2-3 s on a small machine.
JVM_FLAGS = ["-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true"]


def ensure_app(cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[Path, bool]:
    """Return the directory of the unpacked registry, fetching it with Maven on first use.

    Returns ``(app_dir, downloaded)``. Safe against concurrent callers (a file lock serialises
    the download; the app is unpacked into a temporary directory renamed into place when
    complete). Raises :class:`BrokerError` when Maven is missing or the download fails.
    """
    return fetch_with_maven(
        cache_dir / "app",
        RUNNER_JAR,
        f"Apicurio Registry {APICURIO_VERSION}",
        ["dependency:copy", f"-Dartifact={ARTIFACT}"],
        _unpack,
    )


def _unpack(staging: Path) -> None:
    """Unpack the one tar.gz Maven copied into ``staging`` (Maven keeps its own copy)."""
    archives = list(staging.glob("*.tar.gz"))
    if len(archives) != 1:
        raise BrokerError(f"expected one {ARTIFACT} archive, Maven copied {len(archives)}")
    try:
        with tarfile.open(archives[0]) as tar:
            tar.extractall(staging, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise BrokerError(f"could not unpack {archives[0].name}: {exc}") from exc
    archives[0].unlink()


@dataclass(frozen=True)
class RegistryInfo:
    """What a running registry publishes in its state directory's ``registry.json``."""

    pid: int
    port: int
    log_file: str
    started_at: float

    @property
    def url(self) -> str:
        """The Confluent-API base URL clients (SchemaRegistryClient) are given."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


class LocalRegistry:
    """One Apicurio Registry process on a loopback port, in-memory storage.

    The port is chosen once per state directory (a free one, or ``port`` when given) and stored
    in ``port.json`` there; every later start reuses it, so clients keep their URL across
    restarts. ``start`` may block for the download (first use) and the start (~3 s; up to
    ``start_timeout_s``); it raises :class:`BrokerError` if the stored port is taken by another
    process or the registry does not report ready in time.
    """

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        start_timeout_s: float = 90.0,
        port: int | None = None,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise BrokerError(f"registry port must be within 1..65535, got {port}")
        self.state_dir = state_dir.resolve()
        self.cache_dir = cache_dir
        self.start_timeout_s = start_timeout_s
        self.pinned_port = port

    @property
    def _info_file(self) -> Path:
        return self.state_dir / "registry.json"

    def port(self) -> int:
        """The port of this state directory, chosen and stored once (a pinned one replaces it)."""
        port_file = self.state_dir / "port.json"
        stored: int | None = None
        if port_file.exists():
            try:
                stored = int(json.loads(port_file.read_text())["port"])
            except (ValueError, TypeError, KeyError) as exc:
                raise BrokerError(
                    f"the registry port file {port_file} is unreadable ({exc}); delete it"
                ) from exc
        port = self.pinned_port or stored or free_ports(1)[0]
        if port != stored:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            port_file.write_text(json.dumps({"port": port}))
        return port

    def status(self) -> RegistryInfo | None:
        """The running registry of this state directory, or None (a stale file is removed)."""
        state = read_running_state(self._info_file, "registry")
        if state is None:
            return None
        try:
            info = RegistryInfo(**state)
        except TypeError as exc:
            raise BrokerError(f"the registry state file {self._info_file} is unreadable") from exc
        if not runs_with_argument(info.pid, self._marker):
            self._info_file.unlink(missing_ok=True)
            return None
        return info

    @property
    def _marker(self) -> str:
        """The JVM argument that names this registry's process (ps shows the state dir)."""
        return f"-Dsentinel.registry.dir={self.state_dir}"

    def start(self) -> RegistryInfo:
        """Start the registry (or return the one already running in this state directory)."""
        running = self.status()
        if running is not None:
            return running
        port = self.port()
        if not port_free(port):
            raise BrokerError(
                f"port {port} of the registry in {self.state_dir} is taken by another process; "
                "free it, or pin another with --registry-port"
            )
        java = shutil.which("java")
        if java is None:
            raise BrokerError(f"'java' was not found on PATH: {JAVA_HINT}")
        app_dir, _ = ensure_app(self.cache_dir)
        log_file = self.state_dir / "registry.log"
        env = {
            **os.environ,
            "QUARKUS_HTTP_HOST": "127.0.0.1",
            "QUARKUS_HTTP_PORT": str(port),
            "QUARKUS_LOG_CONSOLE_JSON": "false",
        }
        cmd = [
            java, *JVM_FLAGS, self._marker,
            "-jar", str(app_dir / RUNNER_JAR),
        ]  # fmt: skip
        with open(log_file, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=app_dir,
                start_new_session=True,
            )  # fmt: skip
        info = RegistryInfo(pid=proc.pid, port=port, log_file=str(log_file), started_at=time.time())
        write_atomically(self._info_file, info.to_json())
        try:
            wait_until_ready(port, self.start_timeout_s, proc)
        except BrokerError:
            self.stop()
            raise
        return info

    def stop(self, timeout_s: float = 20.0) -> bool:
        """Stop the registry: SIGTERM, then SIGKILL after ``timeout_s``. False if none ran."""
        info = self.status()
        if info is None:
            return False
        terminate(info.pid, timeout_s)
        self._info_file.unlink(missing_ok=True)
        return True


def wait_until_ready(
    port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until ``GET /health/ready`` answers 200; raise BrokerError if it does not in time."""
    deadline = time.monotonic() + timeout_s
    url = f"http://127.0.0.1:{port}/health/ready"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the registry exited with code {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):  # still booting (refused, 503): retry
            pass
        time.sleep(0.2)
    raise BrokerError(f"no schema registry answered at {url} within {timeout_s:.0f} s")
