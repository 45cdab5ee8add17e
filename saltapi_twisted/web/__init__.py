"""The HTTP side: klein routes, streams, webhook and the site."""
