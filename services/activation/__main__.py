"""`python -m services.activation`: serve ActivationService until SIGTERM (settings: LM_SAES_*)."""

from __future__ import annotations

import os
import sys
import threading

import grpc


def main() -> int:
    if os.environ.get("LM_SAES_ONLINE") != "1":  # never wait on a model hub unless asked to
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_saes.proto.lm_saes.v1 import activation_pb2_grpc
    from services.activation.servicer import SERVICE_NAME, ActivationServicer
    from services.activation.settings import ActivationSettings
    from services.common import serve
    from services.common.job_service import export_job_gauges
    from services.common.settings import load_settings

    settings = load_settings(ActivationSettings)
    servicer = ActivationServicer(settings)
    servicer.executor.resume_unfinished()
    stop = threading.Event()
    export_job_gauges(servicer.executor, "activations", stop)

    def register(server: grpc.Server) -> list[str]:
        activation_pb2_grpc.add_ActivationServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    def on_stop() -> None:
        stop.set()
        servicer.close()

    return serve(settings, register, on_stop=on_stop)


if __name__ == "__main__":
    sys.exit(main())
