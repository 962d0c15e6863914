"""The memory engine: model, store, embedder, ingestion, retrieval. Knows nothing of HTTP."""
