"""The project's machinery: running the notebooks, caches, figure provenance and the README's results table."""
