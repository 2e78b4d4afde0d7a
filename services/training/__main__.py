"""`python -m services.training`: the TrainingService (env: LM_SAES_PORT, LM_SAES_DOCUMENTS, ...)."""

import sys

from lm_saes.rpc.v1 import training_pb2, training_pb2_grpc
from services.common.job_host import JobServiceSettings, run_job_service
from services.common.settings import load_settings
from services.training.servicer import TrainingServicer


def main() -> int:
    settings = load_settings(JobServiceSettings)
    name = training_pb2.DESCRIPTOR.services_by_name["TrainingService"].full_name
    return run_job_service(
        settings,
        "training",
        lambda executor: (
            TrainingServicer(executor, settings),
            training_pb2_grpc.add_TrainingServiceServicer_to_server,
            name,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
