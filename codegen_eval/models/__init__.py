"""Everything about calling a model: backends, the one call path, its cache, rate limits, output strategies, batches, prices."""
