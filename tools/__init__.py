"""Host tools: the thecal CLI, client library, benchmarks."""
