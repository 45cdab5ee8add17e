"""A non-blocking REST and streaming API for the Salt master, built on Twisted."""

__version__ = "0.1.0"
