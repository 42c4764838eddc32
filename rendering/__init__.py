"""The sample data's renderer: rooms with furniture and exact depth (sample_data.py writes them)."""
