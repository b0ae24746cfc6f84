"""Fetch, format, start, probe and stop a single-node Apache Kafka in KRaft mode.

Jars come from Maven Central through ``deploy/kafka/pom.xml`` and are cached
outside git. The broker runs as a detached JVM whose pid is kept in its data
dir, so ``down`` stops exactly that process and nothing broader.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.errors import BrokerError, BrokerNotReadyError

KAFKA_VERSION = "4.3.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.properties"
DEFAULT_DATA_DIR = Path(".data") / "kafka"
READY_TIMEOUT_S = 90.0


def cache_dir() -> Path:
    """Where the broker's jars live: $FEEDBACK_KAFKA_CACHE, else ~/.cache/feedback-kafka/<ver>."""
    base = os.environ.get("FEEDBACK_KAFKA_CACHE")
    root = Path(base) if base else Path.home() / ".cache" / "feedback-kafka"
    return root / KAFKA_VERSION


@dataclass(frozen=True)
class Secure:
    """A SASL_SSL listener with one SCRAM-SHA-512 user and a self-signed certificate.

    Made at start in the data dir (``make_secure``): the PKCS12 keystore the broker
    serves, and ``ca.pem``, the certificate clients trust. The password is random
    and only written to ``client.env`` (mode 0600), never printed.
    """

    port: int
    username: str
    password: str
    keystore: Path
    keystore_password: str
    ca_file: Path


def make_secure(data_dir: Path, port: int, username: str = "feedback") -> Secure:
    """Generate the keystore, the CA file and a SCRAM password for a secure listener."""
    import secrets

    data_dir.mkdir(parents=True, exist_ok=True)
    keystore, ca = data_dir / "broker.p12", data_dir / "ca.pem"
    store_pass = secrets.token_urlsafe(18)
    for f in (keystore, ca):
        f.unlink(missing_ok=True)
    keytool = shutil.which("keytool")
    if keytool is None:
        raise BrokerError("keytool (from the JDK) is needed to make the TLS certificate")
    gen = subprocess.run(
        [keytool, "-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048",
         "-dname", "CN=localhost", "-ext", "SAN=ip:127.0.0.1,dns:localhost", "-validity", "30",
         "-storetype", "PKCS12", "-keystore", str(keystore), "-storepass", store_pass,
         "-keypass", store_pass],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    export = subprocess.run(
        [keytool, "-exportcert", "-rfc", "-alias", "broker", "-keystore", str(keystore),
         "-storepass", store_pass, "-file", str(ca)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if gen.returncode or export.returncode:
        raise BrokerError(f"making the TLS certificate failed:\n{gen.stderr}{export.stderr}")
    password = secrets.token_urlsafe(18)
    env = data_dir / "client.env"
    env.write_text(
        f"FEEDBACK_BROKER=kafka://127.0.0.1:{port}\nFEEDBACK_SASL_MECHANISM=SCRAM-SHA-512\n"
        f"FEEDBACK_SASL_USERNAME={username}\nFEEDBACK_SASL_PASSWORD={password}\n"
        f"FEEDBACK_KAFKA_TLS=true\nFEEDBACK_KAFKA_CA_FILE={ca}\n"
    )
    env.chmod(0o600)
    return Secure(port, username, password, keystore, store_pass, ca)


@dataclass(frozen=True)
class BrokerInfo:
    """What a running local broker is and where it listens."""

    pid: int
    port: int
    controller_port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"


def require_tools() -> None:
    """Fail at once, with what to install, when java or mvn is missing."""
    missing = [tool for tool in ("java", "mvn") if shutil.which(tool) is None]
    if missing:
        raise BrokerError(
            f"{' and '.join(missing)} not found on PATH: the local Kafka needs Java 17+ and "
            "Maven (Debian/Ubuntu: apt-get install openjdk-17-jre-headless maven), or point "
            "FEEDBACK_BROKER at an existing cluster instead."
        )


def fetch_jars(progress: Callable[[str], None] = print) -> Path:
    """Resolve the broker's jars from Maven Central once; later calls reuse the cache."""
    libs = cache_dir() / "libs"
    stamp = cache_dir() / ".complete"
    if stamp.exists() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    require_tools()
    progress(f"fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central into {libs} ...")
    tmp = libs.with_name("libs.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"maven could not fetch the Kafka jars:\n{proc.stdout[-3000:]}")
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    stamp.write_text(KAFKA_VERSION)
    return libs


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _state_file(data_dir: Path) -> Path:
    return data_dir / "broker.json"


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _is_kafka(pid: int) -> bool:
    """Guards against a recycled pid: the recorded process must still be our broker."""
    try:
        return b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def status(data_dir: Path = DEFAULT_DATA_DIR) -> BrokerInfo | None:
    """The broker started from this data dir, if it still runs."""
    state = _state_file(data_dir)
    if not state.exists():
        return None
    info = json.loads(state.read_text())
    if not (_alive(int(info["pid"])) and _is_kafka(int(info["pid"]))):
        return None
    return BrokerInfo(int(info["pid"]), int(info["port"]), int(info["controller_port"]), data_dir)


def _server_properties(
    data_dir: Path, port: int, controller_port: int, secure: Secure | None = None
) -> str:
    # Single node: every internal topic has replication 1. Few partitions for the
    # offsets topic keep the first consumer-group join fast on a 2-core machine.
    # A secure listener (SASL_SSL, SCRAM-SHA-512) sits beside the plaintext one, which
    # the broker itself and the readiness probe use.
    listeners = f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
    advertised = f"PLAINTEXT://127.0.0.1:{port}"
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    extra: list[str] = []
    if secure is not None:
        listeners += f",SASL_SSL://127.0.0.1:{secure.port}"
        advertised += f",SASL_SSL://127.0.0.1:{secure.port}"
        protocols += ",SASL_SSL:SASL_SSL"
        extra = [
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
            "org.apache.kafka.common.security.scram.ScramLoginModule required;",
            f"ssl.keystore.location={secure.keystore}",
            "ssl.keystore.type=PKCS12",
            f"ssl.keystore.password={secure.keystore_password}",
            f"ssl.key.password={secure.keystore_password}",
        ]
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={protocols}",
            *extra,
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir.resolve() / 'logs'}",
            "num.partitions=1",
            "auto.create.topics.enable=true",
            "offsets.topic.num.partitions=4",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "",
        ]
    )


def up(
    port: int = 9092,
    data_dir: Path = DEFAULT_DATA_DIR,
    timeout: float = READY_TIMEOUT_S,
    heap: str = "1g",
    progress: Callable[[str], None] = print,
    secure: Secure | None = None,
) -> BrokerInfo:
    """Start the broker in the background and return once a client can round-trip a message."""
    data_dir = data_dir.resolve()
    running = status(data_dir)
    if running:
        if running.port != port:
            raise BrokerError(
                f"a local Kafka from {data_dir} already runs on port {running.port}; "
                "run `feedback kafka down` first or pass --port "
                f"{running.port}"
            )
        wait_ready(running.bootstrap, timeout, running.pid)
        return running
    require_tools()
    if not port_free(port):
        raise BrokerError(
            f"port {port} is already in use: stop what listens there or pass --port N "
            "(and set FEEDBACK_BROKER=kafka://127.0.0.1:N)"
        )
    libs = fetch_jars(progress)
    controller_port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    props = data_dir / "server.properties"
    props.write_text(_server_properties(data_dir, port, controller_port, secure))
    props.chmod(0o600)  # it holds the keystore password when secure
    classpath = f"{libs}/*"
    java = ["java", f"-Dfeedback.kafka.log={data_dir / 'broker.log'}",
            f"-Dlog4j2.configurationFile={LOG4J}"]  # fmt: skip
    if not (data_dir / "logs" / "meta.properties").exists():
        cluster_id = base64_uuid()
        fmt = subprocess.run(
            [
                *java,
                "-cp",
                classpath,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
                *(["--add-scram", f"SCRAM-SHA-512=[name={secure.username},"
                   f"password={secure.password}]"] if secure else []),
            ],  # fmt: skip
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed:\n{fmt.stdout}{fmt.stderr}")
    out = open(data_dir / "broker.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            *java,
            f"-Xmx{heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            "-cp",
            classpath,
            "kafka.Kafka",
            str(props),
        ],  # fmt: skip
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    info = BrokerInfo(proc.pid, port, controller_port, data_dir)
    _state_file(data_dir).write_text(
        json.dumps({"pid": proc.pid, "port": port, "controller_port": controller_port})
    )
    try:
        wait_ready(info.bootstrap, timeout, proc.pid)
    except BaseException:
        down(data_dir)
        raise
    return info


def base64_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    import base64

    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # A leading "-" would be read as an option by the storage tool (as Kafka's own
        # Uuid.randomUuid avoids); about 1 id in 64 starts with it.
        if not cluster_id.startswith("-"):
            return cluster_id


def wait_ready(bootstrap: str, timeout: float, pid: int | None = None) -> float:
    """Poll until a topic can be created and a message round-trips; returns seconds taken."""
    start = time.monotonic()
    deadline = start + timeout
    last: BaseException | None = None
    # Connection refusals are the expected answer while the JVM boots: keep them quiet.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    while time.monotonic() < deadline:
        if pid is not None and not _alive(pid):
            raise BrokerError(f"the Kafka process {pid} exited during start-up; see broker.out")
        try:
            asyncio.run(asyncio.wait_for(_round_trip(bootstrap), timeout=15))
            return time.monotonic() - start
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet", until the deadline
            last = exc
            time.sleep(0.25)
    raise BrokerNotReadyError(f"Kafka at {bootstrap} not ready after {timeout:.0f}s: {last!r}")


async def _round_trip(bootstrap: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError
    from aiokafka.structs import TopicPartition

    topic = "__feedback_ready"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        result = await admin.create_topics([NewTopic(topic, 1, 1)])
        for _, code, *_ in getattr(result, "topic_errors", []):
            if code not in (0, TopicAlreadyExistsError.errno):
                raise BrokerNotReadyError(f"create_topics error code {code}")
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    token = uuid.uuid4().hex.encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    await producer.start()
    try:
        meta = await producer.send_and_wait(topic, token)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(topic, meta.partition)
        consumer.assign([tp])
        consumer.seek(tp, meta.offset)
        msg = await consumer.getone()
        if msg.value != token:
            raise BrokerNotReadyError("round trip returned another message")
    finally:
        await consumer.stop()


def down(data_dir: Path = DEFAULT_DATA_DIR, timeout: float = 30.0) -> bool:
    """Stop the broker recorded in this data dir (SIGTERM, then SIGKILL); True if one ran."""
    data_dir = data_dir.resolve()
    info = status(data_dir)
    state = _state_file(data_dir)
    if info is None:
        state.unlink(missing_ok=True)
        return False
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
        while _alive(info.pid):
            time.sleep(0.05)
    _reap(info.pid)
    state.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
