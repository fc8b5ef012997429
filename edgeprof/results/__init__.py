"""Run directories: manifest.json, records.jsonl (one line per configuration and repetition), summaries."""
