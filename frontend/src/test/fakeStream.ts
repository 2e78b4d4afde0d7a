import { vi } from "vitest";

/** A stand-in for a server-sent event stream answered to a fetch: the test writes events to it;
 * aborting the fetch's signal breaks the read, as a real fetch does. */
export class FakeStream {
  static all: FakeStream[] = [];
  aborted = false;
  private queue: Uint8Array[] = [];
  private ended = false;
  private failure: Error | null = null;
  private wake: (() => void) | null = null;
  constructor(
    readonly url: string,
    readonly init: RequestInit,
  ) {
    FakeStream.all.push(this);
    init.signal?.addEventListener("abort", () => {
      this.aborted = true;
      this.failure = new DOMException("aborted", "AbortError");
      this.wake?.();
    });
  }
  readonly response = {
    ok: true,
    status: 200,
    body: {
      getReader: () => ({
        read: async (): Promise<ReadableStreamReadResult<Uint8Array>> => {
          while (!this.queue.length && !this.ended && !this.failure) await new Promise<void>((r) => (this.wake = r));
          if (this.failure) throw this.failure;
          const value = this.queue.shift();
          return value ? { done: false, value } : { done: true, value: undefined };
        },
      }),
    },
  };
  /** The JSON body the request sent. */
  get body(): unknown {
    return JSON.parse(String(this.init.body));
  }
  send(text: string) {
    this.queue.push(new TextEncoder().encode(text));
    this.wake?.();
  }
  /** One event, split in two chunks (events must survive chunk boundaries). */
  emit(type: string, data: unknown) {
    const text = `event: ${type}\ndata: ${JSON.stringify(data)}\n\n`;
    this.send(text.slice(0, 7));
    this.send(text.slice(7));
  }
  close() {
    this.ended = true;
    this.wake?.();
  }
  static latest(): FakeStream {
    return FakeStream.all[FakeStream.all.length - 1];
  }
}

export const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": status >= 400 ? "application/problem+json" : "application/json" },
  });

/** fetch: POST /api/v1/steer opens a FakeStream (or answers `problem`); `routes` answer GETs by URL. */
export function stubSteerFetch(routes: Record<string, unknown> = {}, problem?: { status: number; title: string; detail: string; field?: string }) {
  const fetchMock = vi.fn(async (url: string, init: RequestInit = {}) => {
    if (url === "/api/v1/steer") {
      if (problem) return json({ type: "about:blank", ...problem }, problem.status);
      return new FakeStream(url, init).response as unknown as Response;
    }
    if (url in routes) return json(routes[url]);
    return json({ title: "Not found", status: 404, detail: `no ${url}` }, 404);
  });
  vi.stubGlobal("fetch", fetchMock);
  return fetchMock;
}

export function token(run: "steered" | "default", index: number, text: string, finish: string | null = null) {
  return { run, index, token_id: 100 + index, token: text, text, probability: 0.5, tracked: {}, finish_reason: finish };
}
