"""A whole-file encoder for the in-memory test sink: light to import in a worker process."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from es_mysql_pipeline.records import Frame, as_rows


@dataclass(frozen=True)
class JsonEncoder:
    """Writes frames as one JSON file; refuses (``ValueError``) frames holding ``refuse``."""

    scratch: str
    refuse: str = ""
    min_rows: int = 0

    def encode(self, frames: Iterable[Frame]) -> str:
        # a staged frame may hold its records as columns
        batch = [record for frame in frames for record in as_rows(frame)]
        if self.refuse and any(r.get("id") == self.refuse for r in batch):
            raise ValueError(f"cannot encode {self.refuse}")
        fd, path = tempfile.mkstemp(prefix="enc-", suffix=".json", dir=self.scratch)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"pid": os.getpid(), "records": batch}, fh)
        return path
