"""Settings declared once, the typed config, the YAML reader, profiles and markers."""
