import { useState, type MouseEvent } from "react";
import { api, ApiError, getToken } from "../api/client";

/** The graph as circuit-tracer / Neuronpedia JSON. A plain link while no API token is stored (reads
 * are public by default); with one, a click fetches the file with the token, which a link cannot
 * send, so the download also works when reads are protected. */
export function ExportLink({ graphId }: { graphId: string }) {
  const [problem, setProblem] = useState<string | null>(null);
  const filename = `${graphId}.json`;
  const onClick = async (event: MouseEvent<HTMLAnchorElement>) => {
    if (!getToken()) return;
    event.preventDefault();
    setProblem(null);
    try {
      const body = await api.circuitExport(graphId);
      const url = URL.createObjectURL(new Blob([JSON.stringify(body)], { type: "application/json" }));
      const save = document.createElement("a");
      save.href = url;
      save.download = filename;
      save.click();
      URL.revokeObjectURL(url);
    } catch (error) {
      setProblem(error instanceof ApiError ? `${error.title}: ${error.detail}` : String(error));
    }
  };
  return (
    <>
      <a href={api.circuitExportUrl(graphId)} download={filename} onClick={onClick}>
        Open in Neuronpedia / circuit-tracer (JSON)
      </a>
      {problem && (
        <span role="alert" className="error-inline">
          {" "}
          export failed: {problem}
        </span>
      )}
    </>
  );
}
