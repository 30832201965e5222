"""Scenario files (format ``cowctx-scenario/1``): schema, loading and running."""
