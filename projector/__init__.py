"""The projector: builds the read models from the event stream, exactly once in effect."""

# The JetStream consumer the projector reads through; operator commands pause and inspect it. Kept
# here so they can name it without importing the consumer and every read model behind it.
DURABLE = "projector"
