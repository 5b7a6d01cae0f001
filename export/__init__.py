"""gancodec export package."""
