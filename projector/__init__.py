"""The projector: builds the read models from the event stream, exactly once in effect."""
