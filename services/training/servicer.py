"""TrainingService: `lm-saes train` configs submitted as jobs, run by worker processes."""

from __future__ import annotations

import json
import tomllib
import uuid

import grpc

from lm_saes.config import ConfigError, RunConfig, parse_config
from lm_saes.jobs import LocalExecutor, job_id_for
from lm_saes.proto.lm_saes.v1 import training_pb2_grpc
from lm_saes.wire import job_to_proto
from services.common.errors import rpc
from services.common.jobs import JobRPCs


class TrainingServicer(JobRPCs, training_pb2_grpc.TrainingServiceServicer):
    kind = "training"

    def __init__(self, executor: LocalExecutor, output_root: str):
        self.executor = executor
        self.output_root = output_root.rstrip("/")

    @rpc
    def Submit(self, request, context):
        raw = self._raw_config(request, context)
        request_id = request.request_id or uuid.uuid4().hex
        # Each job gets its own output (activations, checkpoints, SAE) unless the config names one.
        raw.setdefault("output", f"{self.output_root}/training/{job_id_for(self.kind, request_id)}")
        try:
            cfg = parse_config(raw, RunConfig, "(submitted config)")
        except ConfigError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        job = self.executor.submit(self.kind, cfg.model_dump(mode="json"), request_id)
        return job_to_proto(job)

    @staticmethod
    def _raw_config(request, context) -> dict:
        which = request.WhichOneof("config")
        try:
            if which == "config_toml":
                return tomllib.loads(request.config_toml)
            if which == "config_json":
                value = json.loads(request.config_json)
                if not isinstance(value, dict):
                    raise ValueError("config_json must be a JSON object")
                return value
        except (tomllib.TOMLDecodeError, ValueError) as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{which}: {error}")
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "config: set config_toml or config_json")
