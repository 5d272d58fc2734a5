"""Code that both the web tier and the worker import: settings, keys, schemas, cache, breaker."""
