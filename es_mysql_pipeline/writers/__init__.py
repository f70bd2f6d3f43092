"""Writing rows to sinks without Dagster: what a load engine, a worker process or a test
drives directly; ``resources/sinks/`` wraps each as a Dagster resource."""
