"""One home for test support that is not a fixture: free ports, the MariaDB test URL and
table helpers, the expected rows of the bundled sample, a failed run's message.

Nothing here imports Dagster, so pure tests (and the root conftest) stay light.
"""
