"""Generated race suites and their runner (``cowctx explore --suite``)."""

from cowctx.concurrency.suite.cases import SUITES, Case, stabilisation_suite

__all__ = ["SUITES", "Case", "stabilisation_suite"]
