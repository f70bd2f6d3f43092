"""End-to-end tests against a real ``dagster dev`` (webserver + daemon): browser and GraphQL."""
