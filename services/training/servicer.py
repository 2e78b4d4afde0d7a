"""TrainingService: `lm-saes train` configs submitted as jobs, run by worker processes."""

from __future__ import annotations

import uuid

from lm_saes.config import RunConfig
from lm_saes.jobs import Executor, job_id_for
from lm_saes.rpc.v1 import training_pb2_grpc
from services.common.admission import Admission, parse_object, parsed, require_sections
from services.common.auth import caller
from services.common.errors import invalid, rpc
from services.common.job_servicer import submit_job
from services.common.settings import ServiceSettings

REQUIRED = ("model", "data", "sae", "train")


class TrainingServicer(training_pb2_grpc.TrainingServiceServicer):
    kind = "training"

    def __init__(self, executor: Executor, settings: ServiceSettings):
        self.executor = executor
        self.settings = settings
        self.admission = Admission(settings)
        self.output_root = settings.object_store.rstrip("/")

    @rpc
    def Submit(self, request, context):
        which = request.WhichOneof("config")
        if which is None:
            raise invalid("config", "set config_toml or config_json")
        raw = parse_object(which, getattr(request, which), self.settings.max_config_bytes, toml=which == "config_toml")
        require_sections(raw, REQUIRED, which)
        request_id = request.request_id or uuid.uuid4().hex
        # Each job gets its own output (activations, checkpoints, SAE) unless the config names one.
        job_id = job_id_for(self.kind, request_id, caller().name)
        raw.setdefault("output", f"{self.output_root}/training/{job_id}")
        cfg = self.admission.run(parsed(raw, RunConfig, "(submitted config)"))
        return submit_job(self.executor, self.kind, cfg.model_dump(mode="json"), request_id)
