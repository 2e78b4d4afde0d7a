import type { Job } from "../api/client";

/** The graph a tracing job wrote (its result's graph_id), once it has one. */
export function graphIdOf(job: Pick<Job, "result"> | null | undefined): string | null {
  const id = job?.result?.graph_id;
  return typeof id === "string" && id ? id : null;
}
