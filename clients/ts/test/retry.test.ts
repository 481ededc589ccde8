// Retries, against an in-process gRPC server that answers as told (the live stack cannot be made
// to shed load on demand): which errors are retried, after which delay, with which request id.
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import {
  CommandService,
  InvalidArgumentError,
  OrdersClient,
  PlaceOrderResponseSchema,
  ResourceExhaustedError,
  RetryInfoSchema,
  type PlaceOrderRequest,
} from "../src/index.js";

type Answer = "ok" | { code: Code; retryDelayMs?: number };
let script: Answer[] = [];
let attempts: { requestId: string; at: number }[] = [];

function routes(router: ConnectRouter): void {
  router.service(CommandService, {
    placeOrder(req: PlaceOrderRequest) {
      attempts.push({ requestId: req.requestId, at: Date.now() });
      const answer = script.shift() ?? "ok";
      if (answer === "ok") return create(PlaceOrderResponseSchema, { orderId: req.orderId, version: 1n });
      const details =
        answer.retryDelayMs === undefined
          ? []
          : [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: 0n, nanos: answer.retryDelayMs * 1e6 } } }];
      throw new ConnectError("told to fail", answer.code, undefined, details);
    },
  });
}

const server = http2.createServer(connectNodeAdapter({ routes }));
let client: OrdersClient;

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  client = new OrdersClient({ commandAddress: address, queryAddress: address, retry: { initialBackoffMs: 10 } });
});

after(async () => {
  client.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  script = [];
  attempts = [];
});

const order = { orderId: "o-1", customerId: "c-1" };

describe("retries", () => {
  test("RESOURCE_EXHAUSTED with RetryInfo is retried after the delay it asks for, with the same request id", async () => {
    script = [{ code: Code.ResourceExhausted, retryDelayMs: 200 }, { code: Code.ResourceExhausted, retryDelayMs: 200 }, "ok"];

    const placed = await client.placeOrder(order, { timeoutMs: 5_000 });

    assert.equal(placed.orderId, "o-1");
    assert.equal(attempts.length, 3);
    assert.notEqual(attempts[0]?.requestId, "");
    assert.deepEqual(new Set(attempts.map((a) => a.requestId)).size, 1);
    for (let i = 1; i < attempts.length; i++) {
      assert.ok(attempts[i]!.at - attempts[i - 1]!.at >= 190, `attempt ${i} came too early`);
    }
  });

  test("UNAVAILABLE is retried; a request id the caller gave is kept", async () => {
    script = [{ code: Code.Unavailable }, "ok"];

    await client.placeOrder({ ...order, requestId: "mine" });

    assert.deepEqual(attempts.map((a) => a.requestId), ["mine", "mine"]);
  });

  test("a RetryInfo delay past the deadline ends the call at once", async () => {
    script = [{ code: Code.ResourceExhausted, retryDelayMs: 900 }];
    const started = Date.now();

    const error = await client.placeOrder(order, { timeoutMs: 500 }).then(() => assert.fail("placed"), (e: unknown) => e);

    assert.ok(error instanceof ResourceExhaustedError, String(error));
    assert.equal(error.retryDelayMs, 900);
    assert.equal(attempts.length, 1);
    assert.ok(Date.now() - started < 400, "it did not wait for a retry it could not make");
  });

  test("RESOURCE_EXHAUSTED without RetryInfo, and INVALID_ARGUMENT, are not retried", async () => {
    script = [{ code: Code.ResourceExhausted }, { code: Code.InvalidArgument }];

    await assert.rejects(client.placeOrder(order), ResourceExhaustedError);
    await assert.rejects(client.placeOrder(order), InvalidArgumentError);

    assert.equal(attempts.length, 2);
  });

  test("attempts stop at maxAttempts", async () => {
    script = [{ code: Code.Unavailable }, { code: Code.Unavailable }, { code: Code.Unavailable }];

    await assert.rejects(client.placeOrder(order, { maxAttempts: 2 }), (e: unknown) => (e as { code?: Code }).code === Code.Unavailable);

    assert.equal(attempts.length, 2);
  });
});
