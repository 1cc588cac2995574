"""Prefect tasks: thin wrappers that add caching, retries and tags around the plain core."""
