"""Jobs: records in the document store, run by worker processes (services use these)."""

from lm_saes.jobs.base import Executor
from lm_saes.jobs.executor import LocalExecutor
from lm_saes.jobs.lifecycle import JobReporter, job_id_for, new_job, progress_of
from lm_saes.records import TERMINAL

__all__ = ["TERMINAL", "Executor", "JobReporter", "LocalExecutor", "job_id_for", "new_job", "progress_of"]
