"""gancodec demo package."""
