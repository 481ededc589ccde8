"""The fulfilment saga: a process manager that drives each placed order to CONFIRMED (credit and
stock reserved) or to CANCELLED (whatever it reserved released again)."""

# The JetStream consumer the saga reads the event stream through. Kept here so the embedded
# NATS server's permissions can name it without importing the saga.
DURABLE = "saga"
