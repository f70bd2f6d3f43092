"""Names of the metadata the assets write and the CLI reads (no Dagster: the CLI starts fast)."""

from __future__ import annotations

from typing import Final

# fetch (raw_records)
TIMESTAMP_FIELD: Final = "timestamp_field"
# transform (clean_records)
TOP_REJECT_REASON: Final = "top_reject_reason"
# load (loaded_records)
PROCESSED: Final = "processed"
INSERTED: Final = "inserted"
UPDATED: Final = "updated"
SKIPPED: Final = "skipped"
FAILED: Final = "failed"
#: rows deleted or stamped: ids gone from the source's window, and delete-marked records
DELETED: Final = "deleted"
DEAD_LETTER_PATH: Final = "dead_letter_path"
TRANSFORM_DEAD_LETTER_PATH: Final = "transform_dead_letter_path"
COLUMNS_ADDED: Final = "columns_added"
COLUMNS_WIDENED: Final = "columns_widened"
FIELDS_DISCARDED: Final = "fields_discarded"
DISCARDED_FIELDS: Final = "discarded_fields"
# every step
DURATION_SECONDS: Final = "duration_seconds"
# a step failure's metadata: "config" for a wrong setting (the CLI exits 2), else the class
ERROR_KIND: Final = "error_kind"
#: the value of :data:`ERROR_KIND` for a wrong setting
CONFIG_ERROR_KIND: Final = "config"
#: what metadata shows for no dead letter or no schema change
NOTHING: Final = "(none)"
