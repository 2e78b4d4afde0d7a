"""`python -m services.tracing`: the CircuitService (env: LM_SAES_PORT, LM_SAES_DOCUMENTS, ...)."""

import sys

from lm_saes.rpc.v1 import circuits_pb2, circuits_pb2_grpc
from services.common.job_host import JobServiceSettings, run_job_service
from services.common.settings import load_settings
from services.tracing.servicer import CircuitServicer


class TracingSettings(JobServiceSettings):
    device: str = "cpu"  # where interventions run (traces take it from their config)
    cached_sets: int = 2  # transcoder sets (with their model) kept loaded for interventions


def main() -> int:
    settings = load_settings(TracingSettings)
    name = circuits_pb2.DESCRIPTOR.services_by_name["CircuitService"].full_name
    return run_job_service(
        settings,
        "tracing",
        lambda executor: (
            CircuitServicer(executor, settings, settings.device, settings.cached_sets),
            circuits_pb2_grpc.add_CircuitServiceServicer_to_server,
            name,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
