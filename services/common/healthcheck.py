"""`python -m services.common.healthcheck`: exit 0 when the local service reports SERVING.

For container HEALTHCHECKs and Kubernetes exec probes. Health needs no token, but with TLS on
(`LM_SAES_TLS_CERT_FILE`) the probe must speak TLS too, which native gRPC probes cannot: it
trusts the server's own certificate (or `LM_SAES_TLS_CA_FILE`) and, under mTLS, presents
`LM_SAES_TLS_CLIENT_CERT_FILE`/`_KEY_FILE` when given.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def _read(variable: str) -> bytes | None:
    path = os.environ.get(variable)
    return Path(path).read_bytes() if path else None


def main() -> int:
    address = f"127.0.0.1:{os.environ.get('LM_SAES_PORT', '50051')}"
    if os.environ.get("LM_SAES_TLS_CERT_FILE"):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read("LM_SAES_TLS_CA_FILE") or _read("LM_SAES_TLS_CERT_FILE"),
            private_key=_read("LM_SAES_TLS_CLIENT_KEY_FILE"),
            certificate_chain=_read("LM_SAES_TLS_CLIENT_CERT_FILE"),
        )
        name = os.environ.get("LM_SAES_TLS_SERVER_NAME", "localhost")
        channel = grpc.secure_channel(address, credentials, options=[("grpc.ssl_target_name_override", name)])
    else:
        channel = grpc.insecure_channel(address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    except grpc.RpcError as error:
        print(f"unhealthy: {error.code().name}", file=sys.stderr)
        return 1
    return 0 if reply.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
