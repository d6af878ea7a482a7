"""Helpers of tools/export_s3gen.py: the official S3Gen modules, export wrappers,
the reference algorithm of docs/model-format.md and the exported file formats."""
