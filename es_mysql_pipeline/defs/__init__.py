"""The bundled defs folder: the sample pipeline that loads when no defs.yaml is given."""
