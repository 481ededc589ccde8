// WatchOrders as an async iterator that survives disconnects: it remembers the resume token of
// the last message and reopens the stream with it, so the server continues right after it.
import { Code } from "@connectrpc/connect";
import type { OrderUpdate, WatchOrdersResponse } from "./gen/orders/v1/query_service_pb.js";
import { toOrdersError, type OrdersError } from "./errors.js";

export interface WatchOptions {
  /** Ends the watch. */
  signal?: AbortSignal;
  /** Extra request metadata on every (re)connection. */
  headers?: HeadersInit;
  /** Consecutive failed reconnections before the error is thrown (default: no limit). */
  maxReconnectAttempts?: number;
  /** The first wait before reconnecting (default 100 ms), doubled per failure up to maxBackoffMs. */
  initialBackoffMs?: number;
  /** The cap on that wait (default 2000 ms). */
  maxBackoffMs?: number;
  /** Told of each disconnect the watch recovers from. */
  onReconnect?: (error: OrdersError | undefined, attempt: number) => void;
}

type Open = (resumeToken: string, signal: AbortSignal) => AsyncIterable<WatchOrdersResponse>;

/** A dropped connection or a stopping server (UNAVAILABLE, e.g. SHUTTING_DOWN), a reset stream
 * (INTERNAL/UNKNOWN with no status from the server) or a cancel we did not ask for: reconnect.
 * Anything else (a bad filter or token, WATCH_LIMIT, no permission) is the caller's to handle. */
function resumable(error: OrdersError, signal: AbortSignal): boolean {
  if (signal.aborted) return false;
  switch (error.code) {
    case Code.Unavailable:
    case Code.Canceled:
      return true;
    case Code.Internal:
    case Code.Unknown:
      return error.details.errorInfo === undefined;
    default:
      return false;
  }
}

export class OrderWatch implements AsyncIterable<OrderUpdate> {
  private token: string;
  private count = 0;

  constructor(
    private readonly open: Open,
    resumeToken: string,
    private readonly options: WatchOptions,
  ) {
    this.token = resumeToken;
  }

  /** The token to resume after the last update (or heartbeat) received. */
  get resumeToken(): string {
    return this.token;
  }

  /** How many times the stream was reopened. */
  get reconnects(): number {
    return this.count;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<OrderUpdate> {
    const controller = new AbortController();
    const outer = this.options.signal;
    const onAbort = (): void => controller.abort(outer?.reason);
    if (outer?.aborted) return;
    outer?.addEventListener("abort", onAbort, { once: true });
    const initial = this.options.initialBackoffMs ?? 100;
    const cap = this.options.maxBackoffMs ?? 2_000;
    const maxFailures = this.options.maxReconnectAttempts ?? Number.POSITIVE_INFINITY;
    let failures = 0;
    try {
      for (;;) {
        let error: OrdersError | undefined;
        try {
          for await (const message of this.open(this.token, controller.signal)) {
            failures = 0;
            if (message.kind.case === "update") {
              this.token = message.kind.value.resumeToken;
              yield message.kind.value;
            } else if (message.kind.case === "heartbeat" && message.kind.value.resumeToken !== "") {
              this.token = message.kind.value.resumeToken;
            }
          }
        } catch (err) {
          error = toOrdersError(err);
          if (!resumable(error, controller.signal)) {
            if (controller.signal.aborted) return;
            throw error;
          }
        }
        // Here the stream ended: with a resumable error, or (never expected) cleanly.
        failures += 1;
        if (failures > maxFailures) throw error ?? new Error("WatchOrders ended");
        const backoff = Math.min(cap, initial * 2 ** (failures - 1));
        await wait(Math.random() * backoff + backoff / 2, controller.signal);
        if (controller.signal.aborted) return;
        this.count += 1;
        this.options.onReconnect?.(error, this.count);
      }
    } finally {
      outer?.removeEventListener("abort", onAbort);
      controller.abort();
    }
  }
}

function wait(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
