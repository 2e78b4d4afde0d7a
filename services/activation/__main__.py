"""`python -m services.activation`: serve ActivationService until SIGTERM (settings: LM_SAES_*)."""

from __future__ import annotations

import os
import sys


def main() -> int:
    if os.environ.get("LM_SAES_ONLINE") != "1":  # never wait on a model hub unless asked to
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_saes.rpc.v1 import activation_pb2_grpc
    from services.activation.servicer import SERVICE_NAME, ActivationServicer
    from services.activation.settings import ActivationSettings
    from services.common.job_host import make_executor, run_job_service
    from services.common.settings import load_settings

    settings = load_settings(ActivationSettings)
    executor = make_executor(settings, ActivationServicer.kind)
    servicer = ActivationServicer(settings, executor=executor)
    return run_job_service(
        settings,
        servicer.kind,
        lambda _: (servicer, activation_pb2_grpc.add_ActivationServiceServicer_to_server, SERVICE_NAME),
        executor=executor,
        on_stop=servicer.close,
    )


if __name__ == "__main__":
    sys.exit(main())
