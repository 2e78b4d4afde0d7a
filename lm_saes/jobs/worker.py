"""`python -m lm_saes.jobs.worker --job ID`: run one job in this process (a Kubernetes pod).

Under torchrun every rank runs the job (data-parallel training); only rank 0 writes the record.
`--shard INDEX` runs one shard of a sharded analysis or activations job (a pod of its Indexed
Job) and leaves the record alone; the job's plain run afterwards merges the shards.
The document store comes from LM_SAES_DOCUMENTS, as for the services.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from lm_saes.jobs.executor import run_job
from lm_saes.stores.documents import open_document_store

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", required=True)
    parser.add_argument("--documents", default=os.environ.get("LM_SAES_DOCUMENTS", "runs/lm-saes.sqlite"))
    parser.add_argument("--shard", type=int, metavar="INDEX", help="run only this shard of a sharded job")
    args = parser.parse_args(argv)
    if args.shard is not None:
        return run_shard(args.documents, args.job, args.shard)
    return run_job(args.documents, args.job)


def run_shard(documents_uri: str, job_id: str, index: int) -> int:
    """One shard of a sharded job; a non-zero exit makes Kubernetes retry this index alone."""
    from lm_saes.jobs.kinds import run_job_shard

    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {job_id}[{index}] %(levelname)s %(message)s")
    with open_document_store(documents_uri) as documents:
        job = documents.get_job(job_id)
    if job is None or job.finished:
        return 0
    try:
        run_job_shard(job, index)
    except Exception:
        log.error("shard %d of job %s failed: %s", index, job_id, traceback.format_exc())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
