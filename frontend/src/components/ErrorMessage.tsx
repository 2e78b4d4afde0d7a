import { ApiError } from "../api/client";

/** Shows any error; RFC 7807 problems with their status, title, detail and the field at fault. */
export function ErrorMessage({ error, onRetry }: { error: unknown; onRetry?: () => void }) {
  if (!error) return null;
  const problem = error instanceof ApiError ? error : null;
  const title = problem ? problem.title : "Something went wrong";
  const detail = problem ? problem.detail : error instanceof Error ? error.message : String(error);
  return (
    <div className="error" role="alert">
      <strong>
        {title}
        {problem && problem.status > 0 ? ` (${problem.status})` : ""}
      </strong>
      {detail && <p className="error-detail">{detail}</p>}
      {problem?.field && (
        <p className="error-field">
          Field: <code>{problem.field}</code>
        </p>
      )}
      {onRetry && (
        <button type="button" onClick={onRetry}>
          Retry
        </button>
      )}
    </div>
  );
}

/** Whether a problem blames `field` (or a part of it, e.g. `changes.0.value` for `changes`). */
export function blames(error: unknown, field: string): boolean {
  const blamed = error instanceof ApiError ? error.field : null;
  return Boolean(blamed && (blamed === field || blamed.startsWith(`${field}.`)));
}

/** A problem's detail shown next to the input it blames; nothing for other errors. */
export function FieldError({ error, field, id }: { error: unknown; field: string; id?: string }) {
  if (!blames(error, field)) return null;
  const problem = error as ApiError;
  return (
    <span id={id} className="field-error" role="alert">
      {problem.detail || problem.title}
    </span>
  );
}
