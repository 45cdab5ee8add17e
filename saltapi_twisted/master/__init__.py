"""The link to the Salt master: request channel and event bus."""
