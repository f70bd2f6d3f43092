from __future__ import annotations

from es_mysql_pipeline.cli import main

raise SystemExit(main())
