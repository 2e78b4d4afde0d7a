"""Jobs: records in the document store, run by worker processes (services use these)."""

from lm_saes.jobs.executor import LocalExecutor
from lm_saes.jobs.records import TERMINAL, JobReporter, job_id_for, new_job, progress_of

__all__ = ["TERMINAL", "JobReporter", "LocalExecutor", "job_id_for", "new_job", "progress_of"]
