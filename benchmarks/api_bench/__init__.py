"""Parts of benchmarks/api_latency.py: the service, the measurements and the report."""
