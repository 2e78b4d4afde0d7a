"""The document store and the gRPC clients one gateway process shares across requests."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from fastapi import Request
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.settings import GatewaySettings
from lm_saes.auth import Principal
from lm_saes.rpc.client import (
    ActivationClient,
    AnalysisClient,
    CircuitClient,
    TrainingClient,
    acting_for,
    tls_credentials,
)
from lm_saes.stores.documents import DocumentStore, open_document_store

SERVICE_NAMES = {
    "activation": "lm_saes.v1.ActivationService",
    "training": "lm_saes.v1.TrainingService",
    "analysis": "lm_saes.v1.AnalysisService",
    "tracing": "lm_saes.v1.CircuitService",
}


@dataclass
class Backends:
    documents: DocumentStore
    activation: ActivationClient
    training: TrainingClient
    analysis: AnalysisClient
    tracing: CircuitClient
    settings: GatewaySettings = field(repr=False)

    @classmethod
    def open(cls, settings: GatewaySettings, documents: DocumentStore | None = None) -> Backends:
        """Clients that present the gateway's service token, over TLS when a CA is configured."""
        credentials = None
        if settings.tls_ca_file:
            credentials = tls_credentials(
                settings.tls_ca_file, settings.tls_client_cert_file or None, settings.tls_client_key_file or None
            )
        common = {
            "timeout": settings.grpc_timeout_s,
            "token": settings.service_token,
            "credentials": credentials,
            "server_name": settings.tls_server_name or None,
        }
        return cls(
            documents=documents or open_document_store(settings.documents),
            activation=ActivationClient(settings.activation_address, **common),
            training=TrainingClient(settings.training_address, **common),
            analysis=AnalysisClient(settings.analysis_address, **common),
            tracing=CircuitClient(settings.tracing_address, **common),
            settings=settings,
        )

    @staticmethod
    def as_user(principal: Principal):
        """Calls made inside the block act for `principal` (who owns the jobs they submit)."""
        return acting_for(principal.name, principal.scopes)

    def services(self) -> dict[str, ActivationClient | TrainingClient | AnalysisClient | CircuitClient]:
        return {
            "activation": self.activation,
            "training": self.training,
            "analysis": self.analysis,
            "tracing": self.tracing,
        }

    def job_client(self, kind: str) -> ActivationClient | TrainingClient | AnalysisClient | CircuitClient:
        """The service that runs (and answers the JobService for) jobs of `kind`."""
        clients: dict[str, ActivationClient | TrainingClient | AnalysisClient | CircuitClient] = {
            "activations": self.activation,
            "training": self.training,
            "analysis": self.analysis,
            "tracing": self.tracing,
        }
        return clients[kind]

    def check(self) -> dict[str, str]:
        """ "ok" or why not, for the document store and each service's gRPC health."""
        checks: dict[str, str] = {}
        try:
            self.documents.list_models()
            checks["documents"] = "ok"
        except Exception as error:  # any failure means not ready; the type says which
            checks["documents"] = f"{type(error).__name__}: {error}"
        for name, client in self.services().items():
            stub = health_pb2_grpc.HealthStub(client.channel)
            try:
                reply = stub.Check(
                    health_pb2.HealthCheckRequest(service=SERVICE_NAMES[name]), timeout=self.settings.health_timeout_s
                )
                serving = reply.status == health_pb2.HealthCheckResponse.SERVING
                checks[name] = "ok" if serving else health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                checks[name] = f"{error.code().name} at {client.address}"
        return checks

    def close(self) -> None:
        for client in self.services().values():
            client.close()
        self.documents.close()


def backends(request: Request) -> Backends:
    return request.app.state.backends
