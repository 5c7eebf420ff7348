"""What a run leaves behind: its directory and who may write there, metrics.json beyond the happy path, provenance, names and progress lines."""
