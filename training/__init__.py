"""gancodec training package."""
