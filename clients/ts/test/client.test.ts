// The client against a live stack (tests/e2e/test_ts_client.py starts it and runs `npm test`):
// ORDERS_COMMAND_ADDR, ORDERS_QUERY_ADDR, ORDERS_TOKEN, and ORDERS_TEST_CONTROL_URL, where the
// harness kills and restarts the query server on request.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import {
  AbortedError,
  CancelledError,
  ERROR_DOMAIN,
  InvalidArgumentError,
  OrderState,
  OrdersClient,
  UnauthenticatedError,
  UnavailableError,
  type OrderUpdate,
} from "../src/index.js";

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is not set: run through tests/e2e/test_ts_client.py`);
  return value;
}

const addresses = { commandAddress: env("ORDERS_COMMAND_ADDR"), queryAddress: env("ORDERS_QUERY_ADDR") };
const client = new OrdersClient({ ...addresses, token: env("ORDERS_TOKEN"), defaultTimeoutMs: 15_000 });
after(() => client.close());

const id = (prefix: string): string => `${prefix}-${randomUUID()}`;
const eur = (units: bigint, nanos = 0) => ({ currencyCode: "EUR", units, nanos });

async function control(action: string): Promise<void> {
  const reply = await fetch(`${env("ORDERS_TEST_CONTROL_URL")}/${action}`, { method: "POST" });
  assert.equal(reply.status, 200, await reply.text());
}

async function newCustomer(): Promise<string> {
  const customerId = id("c");
  await client.registerCustomer({ customerId, displayName: "Ada", email: "ada@example.com", creditLimit: eur(1000n) });
  return customerId;
}

describe("commands and queries", () => {
  test("an order placed and confirmed reads back confirmed with the consistency token", async () => {
    const customerId = await newCustomer();
    const orderId = id("o");
    const placed = await client.placeOrder({
      orderId,
      customerId,
      lines: [{ productId: "p-1", quantity: 4n, unitPrice: eur(2n, 500_000_000) }],
    });
    assert.equal(placed.version, 1n);
    const confirmed = await client.confirmOrder({ orderId, expectedVersion: placed.version });

    const { summary } = await client.getOrderSummary({ orderId, consistencyToken: confirmed.consistencyToken });

    assert.ok(summary);
    assert.equal(summary.state, OrderState.CONFIRMED);
    assert.equal(summary.version, 2n);
    assert.deepEqual([summary.total?.currencyCode, summary.total?.units, summary.total?.nanos], ["EUR", 10n, 0]);
  });

  test("a request id given twice applies the command once and answers the same", async () => {
    const customerId = await newCustomer();
    const request = { requestId: id("r"), orderId: id("o"), customerId, lines: [{ productId: "p-1", quantity: 1n, unitPrice: eur(3n) }] };

    const first = await client.placeOrder(request);
    const second = await client.placeOrder(request);

    assert.deepEqual([second.orderId, second.version, second.consistencyToken], [first.orderId, 1n, first.consistencyToken]);
  });

  test("every query answers for the order's customer and product", async () => {
    const customerId = await newCustomer();
    const productId = id("p");
    const stocked = await client.addStock({ productId, expectedVersion: 0n, quantity: 5n });
    const placed = await client.placeOrder({ orderId: id("o"), customerId, lines: [{ productId, quantity: 2n, unitPrice: eur(4n) }] });
    const consistencyToken = placed.consistencyToken;

    const listed = [];
    for await (const order of client.listAllOrders({ customerId, consistencyToken, pageSize: 1 })) listed.push(order.orderId);
    const dashboard = await client.getCustomerOrders({ customerId, consistencyToken });
    const sales = await client.getProductSales({ productId, consistencyToken });
    const customer = await client.getCustomer({ customerId, consistencyToken });
    const product = await client.getProduct({ productId, consistencyToken: stocked.consistencyToken });

    assert.deepEqual(listed, [placed.orderId]);
    assert.equal(dashboard.totals.find((t) => t.state === OrderState.PLACED)?.orderCount, 1n);
    assert.equal(sales.sales[0]?.unitsSold, 2n);
    assert.equal(customer.customer?.creditLimit?.units, 1000n);
    assert.equal(product.product?.onHand, 5n);
  });
});

describe("errors", () => {
  test("a negative quantity is an InvalidArgumentError with its BadRequest field violation", async () => {
    const attempt = client.placeOrder({
      orderId: id("o"),
      customerId: id("c"),
      lines: [{ productId: "p-1", quantity: -1n, unitPrice: eur(1n) }],
    });

    const error = await attempt.then(() => assert.fail("placed"), (e: unknown) => e);
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.ok(error.details.badRequest);
    assert.deepEqual(Object.keys(error.fieldViolations), ["lines[0].quantity"]);
  });

  test("a stale expected version is an AbortedError with ErrorInfo VERSION_CONFLICT", async () => {
    const placed = await client.placeOrder({ orderId: id("o"), customerId: await newCustomer(), lines: [{ productId: "p-1", quantity: 1n, unitPrice: eur(1n) }] });

    const error = await client.confirmOrder({ orderId: placed.orderId, expectedVersion: 7n }).then(() => assert.fail("confirmed"), (e: unknown) => e);

    assert.ok(error instanceof AbortedError, String(error));
    assert.deepEqual([error.reason, error.details.errorInfo?.domain], ["VERSION_CONFLICT", ERROR_DOMAIN]);
  });

  test("a call without a token is an UnauthenticatedError, not retried", async () => {
    const anonymous = new OrdersClient(addresses);
    try {
      const error = await anonymous.getOrderSummary({ orderId: id("o") }).then(() => assert.fail("answered"), (e: unknown) => e);
      assert.ok(error instanceof UnauthenticatedError, String(error));
      assert.equal(error.reason, "TOKEN_MISSING");
    } finally {
      anonymous.close();
    }
  });
});

describe("TLS", () => {
  // A command server that asks for a client certificate (the harness's throwaway CA).
  const tlsClient = (withCertificate: boolean): OrdersClient =>
    new OrdersClient({
      commandAddress: env("ORDERS_TLS_COMMAND_ADDR"),
      queryAddress: env("ORDERS_TLS_COMMAND_ADDR"),
      token: env("ORDERS_TOKEN"),
      retry: { maxAttempts: 1 },
      tls: {
        ca: readFileSync(env("ORDERS_TLS_CA")),
        ...(withCertificate ? { cert: readFileSync(env("ORDERS_TLS_CLIENT_CERT")), key: readFileSync(env("ORDERS_TLS_CLIENT_KEY")) } : {}),
      },
    });

  test("a client trusting the CA and presenting its certificate is served with its token", async () => {
    const tls = tlsClient(true);
    try {
      const registered = await tls.registerCustomer({ customerId: id("c"), displayName: "Ada", email: "ada@example.com" });
      assert.equal(registered.version, 1n);
    } finally {
      tls.close();
    }
  });

  test("without a client certificate the handshake is refused", async () => {
    const tls = tlsClient(false);
    try {
      const error = await tls.registerCustomer({ customerId: id("c"), displayName: "Ada" }).then(() => assert.fail("served"), (e: unknown) => e);
      // TLS 1.3 completes the client's side of the handshake before the server checks the
      // certificate, so the refusal arrives as the connection's reset, not as a status.
      assert.ok(error instanceof CancelledError || error instanceof UnavailableError, String(error));
    } finally {
      tls.close();
    }
  });
});

describe("WatchOrders", () => {
  test("the iterator survives a query-server restart with no update missed or repeated", { timeout: 90_000 }, async () => {
    const customerId = await newCustomer();
    const line = { productId: "p-1", quantity: 1n, unitPrice: eur(5n) };
    const a = await client.placeOrder({ orderId: id("a"), customerId, lines: [line] });
    // Unchanged while the server is down: a watch that started afresh would send it again.
    const c = await client.placeOrder({ orderId: id("c"), customerId, lines: [line] });
    const stop = new AbortController();
    const watch = client.watchOrders({ customerId }, { signal: stop.signal, initialBackoffMs: 50, maxBackoffMs: 500 });
    const seen = new Map<string, bigint[]>();
    const wanted = new Map<string, bigint>([[a.orderId, 1n], [c.orderId, 1n]]);
    let arrived: () => void = () => {};
    const consumer = (async () => {
      for await (const update of watch as AsyncIterable<OrderUpdate>) {
        const summary = update.summary;
        assert.ok(summary);
        seen.set(summary.orderId, [...(seen.get(summary.orderId) ?? []), summary.version]);
        arrived();
      }
    })();
    const ended = consumer.then(() => assert.fail("the watch ended by itself"));
    const caughtUp = async (): Promise<void> => {
      const reached = async (): Promise<void> => {
        while (![...wanted].every(([order, version]) => seen.get(order)?.at(-1) === version)) {
          await new Promise<void>((resolve) => (arrived = resolve));
        }
      };
      await Promise.race([reached(), ended]);
    };

    await caughtUp();
    await control("query-server/kill");
    // While the query server is down: one change to the watched order, one new order.
    const confirmed = await client.confirmOrder({ orderId: a.orderId, expectedVersion: a.version });
    const b = await client.placeOrder({ orderId: id("b"), customerId, lines: [line] });
    await control("query-server/start");
    wanted.set(a.orderId, 2n).set(b.orderId, 1n);
    await caughtUp();
    await client.shipOrder({ orderId: a.orderId, expectedVersion: confirmed.version });
    wanted.set(a.orderId, 3n);
    await caughtUp();
    stop.abort();
    await consumer;
    ended.catch(() => {});

    assert.ok(watch.reconnects >= 1, "the stream was cut and reopened");
    assert.deepEqual(Object.fromEntries(seen), { [a.orderId]: [1n, 2n, 3n], [b.orderId]: [1n], [c.orderId]: [1n] });
  });
});
