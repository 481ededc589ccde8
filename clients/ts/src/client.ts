// OrdersClient: typed calls for every CommandService and QueryService RPC over gRPC (HTTP/2),
// with request ids, one deadline per call, retries that honour RetryInfo, typed errors, and a
// WatchOrders subscription that resumes itself.
import { randomUUID } from "node:crypto";
import { create, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, createClient, type CallOptions as ConnectCallOptions, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import * as cmd from "./gen/orders/v1/command_service_pb.js";
import * as qry from "./gen/orders/v1/query_service_pb.js";
import { toOrdersError, type OrdersError } from "./errors.js";
import { OrderWatch, type WatchOptions } from "./watch.js";

/** TLS for both servers; `true` trusts the system's roots. */
export interface TlsOptions {
  /** PEM roots to trust instead of the system's. */
  ca?: string | Buffer;
  /** PEM client certificate and key, for servers that ask for one. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name the server's certificate must carry, when it differs from the address's host. */
  serverName?: string;
}

export interface RetryOptions {
  /** Attempts per call, the first included (default 4; 1 turns retries off). */
  maxAttempts?: number;
  /** The first backoff when the server gives no RetryInfo (default 100 ms), doubled per attempt. */
  initialBackoffMs?: number;
  /** The cap on that backoff (default 2000 ms). */
  maxBackoffMs?: number;
}

export interface OrdersClientOptions {
  /** The CommandService's "host:port" or URL. */
  commandAddress: string;
  /** The QueryService's "host:port" or URL. */
  queryAddress: string;
  /** A bearer token, or a function that returns a fresh one for every call. */
  token?: string | (() => string | Promise<string>);
  /** TLS; plaintext when absent. */
  tls?: boolean | TlsOptions;
  /** The deadline of a call whose options give none (default 10 000 ms); it covers every retry. */
  defaultTimeoutMs?: number;
  retry?: RetryOptions;
  /** More interceptors, run after the client's own (authorization). */
  interceptors?: Interceptor[];
}

export interface CallOptions {
  /** The call's deadline from now, covering every attempt (default: the client's). */
  timeoutMs?: number;
  /** Aborts the call (and its retries). */
  signal?: AbortSignal;
  /** Extra request metadata. */
  headers?: HeadersInit;
  /** Overrides the client's RetryOptions.maxAttempts for this call. */
  maxAttempts?: number;
}

type Init<D extends DescMessage> = MessageInitShape<D>;
type Out<D extends DescMessage> = MessageShape<D>;

/** Retryable: UNAVAILABLE, RESOURCE_EXHAUSTED that carries RetryInfo (the server's "come back
 * later"), and CANCELLED from a server shedding load (not from our own signal). Commands are safe
 * to repeat: each attempt carries the same request id, so the server applies it once. */
export function isRetryable(error: OrdersError, signal?: AbortSignal): boolean {
  switch (error.code) {
    case Code.Unavailable:
      return true;
    case Code.ResourceExhausted:
      return error.details.retryInfo !== undefined;
    case Code.Canceled:
      return signal?.aborted !== true;
    default:
      return false;
  }
}

function baseUrl(address: string, tls: boolean): string {
  return /^[a-z]+:\/\//i.test(address) ? address : `${tls ? "https" : "http"}://${address}`;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

export class OrdersClient {
  private readonly commands: Client<typeof cmd.CommandService>;
  private readonly queries: Client<typeof qry.QueryService>;
  private readonly sessions: Http2SessionManager[] = [];
  private readonly defaultTimeoutMs: number;
  private readonly retry: Required<RetryOptions>;

  constructor(options: OrdersClientOptions) {
    this.defaultTimeoutMs = options.defaultTimeoutMs ?? 10_000;
    this.retry = {
      maxAttempts: options.retry?.maxAttempts ?? 4,
      initialBackoffMs: options.retry?.initialBackoffMs ?? 100,
      maxBackoffMs: options.retry?.maxBackoffMs ?? 2_000,
    };
    const token = options.token;
    const auth: Interceptor = (next) => async (req) => {
      if (token !== undefined) {
        req.header.set("authorization", `Bearer ${typeof token === "string" ? token : await token()}`);
      }
      return next(req);
    };
    const interceptors = [auth, ...(options.interceptors ?? [])];
    const tls = options.tls === undefined || options.tls === false ? undefined : options.tls === true ? {} : options.tls;
    const nodeOptions = tls && { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.serverName };
    const transport = (address: string) => {
      const url = baseUrl(address, tls !== undefined);
      // Our own session manager, so close() can end the connection (and a process can exit).
      const session = new Http2SessionManager(url, { pingIntervalMs: 30_000, pingIdleConnection: true }, nodeOptions);
      this.sessions.push(session);
      return createGrpcTransport({ baseUrl: url, sessionManager: session, interceptors });
    };
    this.commands = createClient(cmd.CommandService, transport(options.commandAddress));
    this.queries = createClient(qry.QueryService, transport(options.queryAddress));
  }

  /** Closes both connections; calls in flight fail. */
  close(): void {
    for (const session of this.sessions) session.abort();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  // Commands: a request id is added when absent, and kept across retries.

  registerCustomer(req: Init<typeof cmd.RegisterCustomerRequestSchema>, opts?: CallOptions): Promise<cmd.RegisterCustomerResponse> {
    return this.command(cmd.RegisterCustomerRequestSchema, req, (r, o) => this.commands.registerCustomer(r, o), opts);
  }

  // Erases the customer's personal data for good (needs the orders.admin scope).
  forgetCustomer(req: Init<typeof cmd.ForgetCustomerRequestSchema>, opts?: CallOptions): Promise<cmd.ForgetCustomerResponse> {
    return this.command(cmd.ForgetCustomerRequestSchema, req, (r, o) => this.commands.forgetCustomer(r, o), opts);
  }

  reserveCredit(req: Init<typeof cmd.ReserveCreditRequestSchema>, opts?: CallOptions): Promise<cmd.ReserveCreditResponse> {
    return this.command(cmd.ReserveCreditRequestSchema, req, (r, o) => this.commands.reserveCredit(r, o), opts);
  }

  releaseCredit(req: Init<typeof cmd.ReleaseCreditRequestSchema>, opts?: CallOptions): Promise<cmd.ReleaseCreditResponse> {
    return this.command(cmd.ReleaseCreditRequestSchema, req, (r, o) => this.commands.releaseCredit(r, o), opts);
  }

  addStock(req: Init<typeof cmd.AddStockRequestSchema>, opts?: CallOptions): Promise<cmd.AddStockResponse> {
    return this.command(cmd.AddStockRequestSchema, req, (r, o) => this.commands.addStock(r, o), opts);
  }

  reserveStock(req: Init<typeof cmd.ReserveStockRequestSchema>, opts?: CallOptions): Promise<cmd.ReserveStockResponse> {
    return this.command(cmd.ReserveStockRequestSchema, req, (r, o) => this.commands.reserveStock(r, o), opts);
  }

  releaseStock(req: Init<typeof cmd.ReleaseStockRequestSchema>, opts?: CallOptions): Promise<cmd.ReleaseStockResponse> {
    return this.command(cmd.ReleaseStockRequestSchema, req, (r, o) => this.commands.releaseStock(r, o), opts);
  }

  placeOrder(req: Init<typeof cmd.PlaceOrderRequestSchema>, opts?: CallOptions): Promise<cmd.PlaceOrderResponse> {
    return this.command(cmd.PlaceOrderRequestSchema, req, (r, o) => this.commands.placeOrder(r, o), opts);
  }

  confirmOrder(req: Init<typeof cmd.ConfirmOrderRequestSchema>, opts?: CallOptions): Promise<cmd.ConfirmOrderResponse> {
    return this.command(cmd.ConfirmOrderRequestSchema, req, (r, o) => this.commands.confirmOrder(r, o), opts);
  }

  cancelOrder(req: Init<typeof cmd.CancelOrderRequestSchema>, opts?: CallOptions): Promise<cmd.CancelOrderResponse> {
    return this.command(cmd.CancelOrderRequestSchema, req, (r, o) => this.commands.cancelOrder(r, o), opts);
  }

  shipOrder(req: Init<typeof cmd.ShipOrderRequestSchema>, opts?: CallOptions): Promise<cmd.ShipOrderResponse> {
    return this.command(cmd.ShipOrderRequestSchema, req, (r, o) => this.commands.shipOrder(r, o), opts);
  }

  // Queries: pass a command's consistency_token to read your own write.

  getOrderSummary(req: Init<typeof qry.GetOrderSummaryRequestSchema>, opts?: CallOptions): Promise<qry.GetOrderSummaryResponse> {
    return this.query(qry.GetOrderSummaryRequestSchema, req, (r, o) => this.queries.getOrderSummary(r, o), opts);
  }

  listOrders(req: Init<typeof qry.ListOrdersRequestSchema>, opts?: CallOptions): Promise<qry.ListOrdersResponse> {
    return this.query(qry.ListOrdersRequestSchema, req, (r, o) => this.queries.listOrders(r, o), opts);
  }

  getCustomerOrders(req: Init<typeof qry.GetCustomerOrdersRequestSchema>, opts?: CallOptions): Promise<qry.GetCustomerOrdersResponse> {
    return this.query(qry.GetCustomerOrdersRequestSchema, req, (r, o) => this.queries.getCustomerOrders(r, o), opts);
  }

  getProductSales(req: Init<typeof qry.GetProductSalesRequestSchema>, opts?: CallOptions): Promise<qry.GetProductSalesResponse> {
    return this.query(qry.GetProductSalesRequestSchema, req, (r, o) => this.queries.getProductSales(r, o), opts);
  }

  getCustomer(req: Init<typeof qry.GetCustomerRequestSchema>, opts?: CallOptions): Promise<qry.GetCustomerResponse> {
    return this.query(qry.GetCustomerRequestSchema, req, (r, o) => this.queries.getCustomer(r, o), opts);
  }

  getProduct(req: Init<typeof qry.GetProductRequestSchema>, opts?: CallOptions): Promise<qry.GetProductResponse> {
    return this.query(qry.GetProductRequestSchema, req, (r, o) => this.queries.getProduct(r, o), opts);
  }

  /** Every page of ListOrders, one order at a time. */
  async *listAllOrders(req: Init<typeof qry.ListOrdersRequestSchema>, opts?: CallOptions): AsyncGenerator<qry.OrderSummary> {
    let pageToken = req.pageToken ?? "";
    do {
      const page = await this.listOrders({ ...req, pageToken }, opts);
      yield* page.orders;
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
  }

  /** Updates of the matching orders: the current state first, then every committed change. After
   * a disconnect it reconnects with the last resume token, so no update is missed or repeated.
   * Break out of the loop (or abort `signal`) to end it. */
  watchOrders(filter: { orderId?: string; customerId?: string; resumeToken?: string } = {}, options: WatchOptions = {}): OrderWatch {
    return new OrderWatch(
      (resumeToken, signal) =>
        this.queries.watchOrders(create(qry.WatchOrdersRequestSchema, { ...filter, resumeToken }), { signal, headers: options.headers }),
      filter.resumeToken ?? "",
      options,
    );
  }

  private command<D extends DescMessage, R>(
    schema: D,
    init: Init<D>,
    call: (req: Out<D>, opts: ConnectCallOptions) => Promise<R>,
    opts?: CallOptions,
  ): Promise<R> {
    const req = create(schema, init) as Out<D> & { requestId: string };
    if (req.requestId === "") req.requestId = randomUUID();
    return this.withRetries((o) => call(req, o), opts);
  }

  private query<D extends DescMessage, R>(
    schema: D,
    init: Init<D>,
    call: (req: Out<D>, opts: ConnectCallOptions) => Promise<R>,
    opts?: CallOptions,
  ): Promise<R> {
    const req = create(schema, init);
    return this.withRetries((o) => call(req, o), opts);
  }

  /** Attempts until success, a non-retryable error, the attempts run out, or the deadline would
   * pass before the next attempt could start (RetryInfo's delay is honoured, never shortened). */
  private async withRetries<R>(attempt: (opts: ConnectCallOptions) => Promise<R>, opts: CallOptions = {}): Promise<R> {
    const deadline = Date.now() + (opts.timeoutMs ?? this.defaultTimeoutMs);
    const maxAttempts = Math.max(1, opts.maxAttempts ?? this.retry.maxAttempts);
    let backoff = this.retry.initialBackoffMs;
    for (let n = 1; ; n++) {
      const remaining = deadline - Date.now();
      try {
        return await attempt({ timeoutMs: Math.max(1, remaining), signal: opts.signal, headers: opts.headers });
      } catch (err) {
        const error = toOrdersError(err);
        if (n >= maxAttempts || !isRetryable(error, opts.signal)) throw error;
        const delay = error.retryDelayMs ?? Math.random() * backoff;
        backoff = Math.min(backoff * 2, this.retry.maxBackoffMs);
        if (Date.now() + delay >= deadline) throw error;
        await sleep(delay, opts.signal);
      }
    }
  }
}
