"""The dynamic batching engine: one queue and one model thread per model, pure batch policies."""
