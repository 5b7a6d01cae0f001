"""gancodec benchmarks package."""
