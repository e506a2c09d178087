"""Data: sources (files, formats, built-ins), preprocessing and worker-side batching."""
