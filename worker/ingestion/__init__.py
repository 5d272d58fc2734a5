"""Collections' ingestion: uploads parsed, indexed incrementally, published atomically."""
