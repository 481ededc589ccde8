// The Orders TypeScript client: OrdersClient, its typed errors, and the generated messages.
export { OrdersClient, isRetryable, type CallOptions, type OrdersClientOptions, type RetryOptions, type TlsOptions } from "./client.js";
export * from "./errors.js";
export { OrderWatch, type WatchOptions } from "./watch.js";
export * from "./gen/orders/v1/types_pb.js";
export * from "./gen/orders/v1/command_service_pb.js";
export * from "./gen/orders/v1/query_service_pb.js";
export * from "./gen/orders/v1/events_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
