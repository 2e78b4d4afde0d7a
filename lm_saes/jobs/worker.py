"""`python -m lm_saes.jobs.worker --job ID`: run one job in this process (a Kubernetes pod).

Under torchrun every rank runs the job (data-parallel training); only rank 0 writes the record.
The document store comes from LM_SAES_DOCUMENTS, as for the services.
"""

from __future__ import annotations

import argparse
import os
import sys

from lm_saes.jobs.executor import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", required=True)
    parser.add_argument("--documents", default=os.environ.get("LM_SAES_DOCUMENTS", "runs/lm-saes.sqlite"))
    args = parser.parse_args(argv)
    return run_job(args.documents, args.job)


if __name__ == "__main__":
    sys.exit(main())
