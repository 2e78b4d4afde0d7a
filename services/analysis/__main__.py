"""`python -m services.analysis`: the AnalysisService (env: LM_SAES_PORT, LM_SAES_DOCUMENTS, ...)."""

import sys

from lm_saes.rpc.v1 import analysis_pb2, analysis_pb2_grpc
from services.analysis.servicer import AnalysisServicer
from services.analysis.settings import AnalysisSettings
from services.common.job_host import run_job_service
from services.common.settings import load_settings


def main() -> int:
    settings = load_settings(AnalysisSettings)
    name = analysis_pb2.DESCRIPTOR.services_by_name["AnalysisService"].full_name
    return run_job_service(
        settings,
        "analysis",
        lambda executor: (
            AnalysisServicer(executor, executor.documents, settings),
            analysis_pb2_grpc.add_AnalysisServiceServicer_to_server,
            name,
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
