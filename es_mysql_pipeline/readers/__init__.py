"""The sources' readers, free of Dagster: the resources wrap them, and worker processes
import them without paying for Dagster."""
