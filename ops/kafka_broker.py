"""A real single-node Apache Kafka (KRaft) broker without a Docker engine.

The broker's classpath is gathered once from Maven Central with ``mvn dependency:copy-dependencies``
into a cache directory (default ``~/.cache/sentinel-stream/kafka-<version>``); later starts run
offline from that cache. Each broker lives in a *state directory* that holds its data dir,
``server.properties``, logs and a ``broker.json`` describing the running process, so
``status``/``stop`` from another process find it.

Nothing here knows about pytest or the CLI: both call :class:`LocalBroker`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.errors import BrokerError

KAFKA_VERSION = "4.1.1"
POM_PATH = Path(__file__).parent / "kafka" / "pom.xml"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "sentinel-stream" / f"kafka-{KAFKA_VERSION}"
DEFAULT_STATE_DIR = Path(".sentinel") / "broker"

JVM_FLAGS = [
    "-Xmx768m",
    "-Xms768m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]

LOG4J2_CONFIG = """\
status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


JAVA_HINT = (
    "the local Kafka broker runs on a Java 17+ runtime: "
    "install it (Debian: apt-get install -y openjdk-17-jre-headless)"
)
MAVEN_HINT = (
    "the first broker start downloads Kafka's jars from Maven Central with Maven: "
    "install it (Debian: apt-get install -y maven)"
)


def _jars_cached(cache_dir: Path) -> bool:
    return (cache_dir / "libs" / f"kafka_2.13-{KAFKA_VERSION}.jar").exists()


def require_tools(cache_dir: Path = DEFAULT_CACHE_DIR) -> str:
    """Return the path of ``java``; raise :class:`BrokerError` naming every missing tool.

    ``mvn`` is needed only while the jar cache in ``cache_dir`` is empty. All missing tools are
    named in one message, with how to install each, so one fix is enough.
    """
    java = shutil.which("java")
    missing = [] if java else [("java", JAVA_HINT)]
    if not _jars_cached(cache_dir) and shutil.which("mvn") is None:
        missing.append(("mvn", MAVEN_HINT))
    if missing or java is None:
        raise BrokerError(
            "; ".join(f"'{tool}' was not found on PATH: {hint}" for tool, hint in missing)
        )
    return java


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all stay bound until every one is picked)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def port_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:``port`` (a bind succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _cluster_id() -> str:
    """16 random bytes, base64url without padding (as StorageTool random-uuid prints).

    One in 32 such ids starts with "-", so it is always passed as ``--cluster-id=<id>``.
    """
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()


def ensure_classpath(cache_dir: Path = DEFAULT_CACHE_DIR) -> tuple[Path, bool]:
    """Return the directory of broker jars, downloading them with Maven on first use.

    Returns ``(jar_dir, downloaded)``. Safe against concurrent callers (a file lock serialises the
    download; the jars land in a temporary directory renamed into place when complete).
    Raises :class:`BrokerError` when Maven is missing or the download fails.
    """
    return fetch_with_maven(
        cache_dir / "libs",
        f"kafka_2.13-{KAFKA_VERSION}.jar",
        "the Kafka jars",
        ["-f", str(POM_PATH), "dependency:copy-dependencies", "-DincludeScope=runtime"],
    )


def fetch_with_maven(
    target: Path,
    marker: str,
    what: str,
    maven_args: list[str],
    unpack: Callable[[Path], None] | None = None,
) -> tuple[Path, bool]:
    """Fill the cache directory ``target`` once with what ``mvn <maven_args>`` copies into it.

    ``target / marker`` existing means the cache is complete. Returns ``(target, downloaded)``.
    Safe against concurrent callers: a file lock beside ``target`` serialises the download, which
    lands in a temporary directory (``unpack`` may then rework it) renamed into place when
    complete. Raises :class:`BrokerError` naming ``what`` when Maven is missing or fails.
    """
    if (target / marker).exists():
        return target, False
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / marker).exists():
            return target, False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(f"'mvn' was not found on PATH: {MAVEN_HINT}")
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        try:
            cmd = [mvn, "-q", "-B", *maven_args, f"-DoutputDirectory={staging}"]
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
                raise BrokerError(f"Maven could not fetch {what}: " + " | ".join(tail))
            if unpack is not None:
                unpack(staging)
            if not (staging / marker).exists():
                raise BrokerError(f"Maven fetched {what} without {marker}")
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        return target, True


@dataclass(frozen=True)
class BrokerInfo:
    """What a running broker publishes in its state directory's ``broker.json``."""

    pid: int
    bootstrap: str
    controller: str
    data_dir: str
    log_file: str
    config_file: str
    started_at: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2)


class LocalBroker:
    """One single-node KRaft broker (combined broker + controller) on loopback ports.

    The ports are chosen once per state directory (free ports, or ``port`` when given) and stored
    in ``ports.json`` there; every later start reuses them, so the bootstrap address survives
    restarts and running clients reconnect by themselves. ``start`` may block for the jar
    download (first use, ~20 s) and the broker's start (~5-10 s); it raises
    :class:`BrokerError` if a stored port is taken by another process or the broker does not
    answer a metadata request in time.
    """

    def __init__(
        self,
        state_dir: Path = DEFAULT_STATE_DIR,
        cache_dir: Path = DEFAULT_CACHE_DIR,
        start_timeout_s: float = 90.0,
        port: int | None = None,
    ) -> None:
        if port is not None and not 0 < port < 65536:
            raise BrokerError(f"broker port must be within 1..65535, got {port}")
        self.state_dir = state_dir.resolve()
        self.cache_dir = cache_dir
        self.start_timeout_s = start_timeout_s
        self.port = port

    @property
    def _info_file(self) -> Path:
        return self.state_dir / "broker.json"

    @property
    def _ports_file(self) -> Path:
        return self.state_dir / "ports.json"

    def ports(self) -> tuple[int, int]:
        """``(client port, controller port)`` of this state directory, chosen and stored once.

        A pinned ``port`` replaces the stored client port (and is stored in its place).
        """
        stored: dict[str, int] = {}
        if self._ports_file.exists():
            try:
                stored = {k: int(v) for k, v in json.loads(self._ports_file.read_text()).items()}
            except (ValueError, TypeError, AttributeError) as exc:
                raise BrokerError(
                    f"the broker ports file {self._ports_file} is unreadable ({exc}); delete it"
                ) from exc
        port, controller = stored.get("port"), stored.get("controller_port")
        if self.port is not None:
            port = self.port
        if port is None or controller is None or port == controller:
            fresh = [p for p in free_ports(3) if p != port]
            port = port if port is not None else fresh.pop(0)
            controller = fresh[0] if controller is None or controller == port else controller
        if stored != {"port": port, "controller_port": controller}:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._ports_file.write_text(json.dumps({"port": port, "controller_port": controller}))
        return port, controller

    def status(self) -> BrokerInfo | None:
        """The running broker of this state directory, or None (stale state files are removed)."""
        state = read_running_state(self._info_file, "broker")
        if state is None:
            return None
        info = BrokerInfo(**state)
        if not runs_with_argument(info.pid, info.config_file):
            self._info_file.unlink(missing_ok=True)
            return None
        return info

    def start(self, fresh: bool = False) -> BrokerInfo:
        """Start the broker (or return the one already running in this state directory)."""
        running = self.status()
        if running is not None:
            return running
        java = require_tools(self.cache_dir)
        jar_dir, _ = ensure_classpath(self.cache_dir)
        data_dir = self.state_dir / "data"
        if fresh:
            shutil.rmtree(data_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        port, controller_port = self.ports()
        for taken in (port, controller_port):
            if not port_free(taken):
                raise BrokerError(
                    f"port {taken} of the broker in {self.state_dir} is taken by another process; "
                    "free it, or pin another with --port"
                )
        config_file = self._write_config(data_dir, port, controller_port)
        if not (data_dir / "meta.properties").exists():
            self._format(java, jar_dir, config_file)
        log_file = self.state_dir / "server.log"
        stdout_file = self.state_dir / "stdout.log"
        cmd = [
            java, *JVM_FLAGS,
            f"-Dlog4j2.configurationFile=file:{self.state_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.state_dir}",
            "-cp", f"{jar_dir}/*", "kafka.Kafka", str(config_file),
        ]  # fmt: skip
        with open(stdout_file, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        info = BrokerInfo(
            pid=proc.pid,
            bootstrap=f"127.0.0.1:{port}",
            controller=f"127.0.0.1:{controller_port}",
            data_dir=str(data_dir),
            log_file=str(log_file),
            config_file=str(config_file),
            started_at=time.time(),
        )
        write_atomically(self._info_file, info.to_json())
        try:
            wait_until_ready(info.bootstrap, self.start_timeout_s, proc)
        except BrokerError:
            self.stop()
            raise
        return info

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout_s``. False if none was running."""
        info = self.status()
        if info is None:
            return False
        terminate(info.pid, timeout_s)
        self._info_file.unlink(missing_ok=True)
        return True

    def _write_config(self, data_dir: Path, port: int, controller_port: int) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": (
                f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data_dir),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created on purpose (sentinel topics create); a typo must not invent one.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
        }
        config_file = self.state_dir / "server.properties"
        config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.state_dir / "log4j2.properties").write_text(LOG4J2_CONFIG)
        return config_file

    def _format(self, java: str, jar_dir: Path, config_file: Path) -> None:
        cmd = [
            java, "-cp", f"{jar_dir}/*", "kafka.tools.StorageTool", "format",
            "--standalone", f"--cluster-id={_cluster_id()}", "-c", str(config_file),
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BrokerError(f"formatting the KRaft data dir failed: {result.stderr.strip()}")


def wait_until_ready(
    bootstrap: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until a client metadata request to ``bootstrap`` succeeds; raise BrokerError if not."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BrokerError(f"the broker exited with code {proc.returncode} while starting")
        try:
            ready = bool(admin.list_topics(timeout=2).brokers)
        except KafkaException:  # the broker is still booting: retry
            ready = False
        if ready:
            return
        time.sleep(0.3)
    raise BrokerError(f"no Kafka broker answered at {bootstrap} within {timeout_s:.0f} s")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that a concurrent reader never sees half a file."""
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text(text)
    partial.replace(path)


def terminate(pid: int, timeout_s: float) -> None:
    """SIGTERM ``pid``, then SIGKILL after ``timeout_s``; returns once it is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while process_alive(pid):
            time.sleep(0.05)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child (we started it in this process) counts as gone.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    # A zombie that is not our child counts as gone too. But the JVM's main thread exits first
    # and shows "Z" while its other threads still shut the broker down: the process is gone
    # only when every thread is.
    tasks = Path(f"/proc/{pid}/task")
    if not tasks.is_dir():
        return True  # no /proc (not Linux): kill(pid, 0) succeeding is all we know
    for task in tasks.iterdir():
        with contextlib.suppress(OSError):  # the thread exited while we looked
            if (task / "stat").read_text().rsplit(") ", 1)[-1][:1] not in ("Z", "X"):
                return True
    return False


def runs_with_argument(pid: int, argument: str) -> bool:
    """True if ``pid`` is alive and has ``argument`` on its command line (not a reused pid)."""
    if not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return argument.encode() in cmdline


def read_running_state(path: Path, what: str) -> dict[str, Any] | None:
    """The JSON object a started ``what`` (broker, registry) left in ``path``, or None.

    Raises BrokerError naming the file when it is unreadable.
    """
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise TypeError("not a JSON object")
        return state
    except (ValueError, TypeError) as exc:
        raise BrokerError(
            f"the {what} state file {path} is unreadable ({exc}); "
            f"stop any {what} using it and delete the file"
        ) from exc


def docker_engine_answers() -> bool:
    """True when a Docker engine responds (then testcontainers can run Kafka)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:  # no engine, no socket, no package: all mean "no"
        return False


@contextlib.contextmanager
def provide_bootstrap(
    external: str | None, state_dir: Path | None = None, *, fresh: bool = False
) -> Iterator[str]:
    """Yield a Kafka bootstrap address, in the project's order of choice.

    1. ``external`` (the user's ``KAFKA_BOOTSTRAP_SERVERS``, read by the caller) if given:
       nothing is started;
    2. a testcontainers Kafka container when a Docker engine answers;
    3. a :class:`LocalBroker` in ``state_dir`` (a temporary directory if None; wiped first when
       ``fresh``), always stopped and, when temporary, removed on exit, even on error.
    """
    if external:
        yield external
        return
    if docker_engine_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    tmp = None
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="sentinel-broker-")
        state_dir = Path(tmp)
    broker = LocalBroker(state_dir)
    try:
        info = broker.start(fresh=fresh)
        yield info.bootstrap
    finally:
        broker.stop()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
