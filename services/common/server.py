"""Server bootstrap shared by every service: health, reflection, metrics, graceful SIGTERM.

`start_server` builds and starts a gRPC server around servicers registered by a callback;
`serve` is the blocking `__main__` entry: it also starts the metrics endpoint and stops on
SIGTERM/SIGINT by marking itself NOT_SERVING (so load balancers drain it), letting in-flight
RPCs finish within the grace period, and returning 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common import errors
from services.common.auth import AuthInterceptor, StreamLimits
from services.common.metrics import MetricsInterceptor, start_metrics_server
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)
# Registers servicers on the server and returns the full names of the services it added.
Register = Callable[[grpc.Server], list[str]]


class HealthServicer(health.HealthServicer):
    """grpc's health servicer with `List` answered (grpcio-health-checking leaves it
    unimplemented, which logged a traceback per call)."""

    def __init__(self) -> None:
        super().__init__()
        self.statuses: dict[str, int] = {}

    def set(self, service: str, status: int) -> None:
        super().set(service, status)
        self.statuses[service] = status

    def List(self, request, context):
        return health_pb2.HealthListResponse(
            statuses={name: health_pb2.HealthCheckResponse(status=status) for name, status in self.statuses.items()}
        )


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    services: list[str]
    port: int
    streams: StreamLimits

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *self.services]:  # "" is the whole server
            self.health.set(name, status)

    def stop(self, grace_s: float) -> None:
        self.set_serving(False)
        self.server.stop(grace_s).wait()


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS from the configured PEM files (mTLS when a client CA is given); None: plaintext."""
    if not settings.tls_cert_file:
        return None
    if not settings.tls_key_file:
        raise ValueError("LM_SAES_TLS_CERT_FILE is set but LM_SAES_TLS_KEY_FILE is not")
    read = lambda path: Path(path).read_bytes()  # noqa: E731
    client_ca = read(settings.tls_client_ca_file) if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(read(settings.tls_key_file), read(settings.tls_cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def start_server(settings: ServiceSettings, register: Register) -> RunningServer:
    """A started server on settings.host:settings.port with authentication, stream limits,
    health checking and reflection (the last two open to probes)."""
    errors.STORE_WAIT_S = settings.store_wait_s
    options = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
    ]
    # Streams may hold at most all but two RPC threads, so unary calls always find one.
    streams = StreamLimits(max(1, min(settings.max_streams, settings.workers - 2)), settings.max_streams_per_caller)
    interceptors = [MetricsInterceptor(), AuthInterceptor(settings.token_table(), streams)]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="rpc"),
        interceptors=interceptors,
        options=options,
    )
    services = register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*services, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.port} (in use?)")
    server.start()
    running = RunningServer(server, health_servicer, services, port, streams)
    running.set_serving(True)
    return running


def serve(settings: ServiceSettings, register: Register, on_stop: Callable[[], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT; `on_stop` runs after RPCs drained (close stores, workers)."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stop.set())
    if settings.metrics_port:
        start_metrics_server(settings.host, settings.metrics_port)
    running = start_server(settings, register)
    log.info(
        "serving %s on %s:%d (%s; metrics on port %s)",
        ", ".join(running.services),
        settings.host,
        running.port,
        "TLS" if settings.tls_cert_file else "plaintext",
        settings.metrics_port or "off",
    )
    stop.wait()
    log.info("stopping: draining in-flight RPCs for up to %.0f s", settings.grace_s)
    running.stop(settings.grace_s)
    if on_stop is not None:
        on_stop()
    log.info("stopped")
    return 0
