"""Benchmark suites of `fastdistill bench`, one module per op family."""
