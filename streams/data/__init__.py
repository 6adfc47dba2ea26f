"""Data access: the repository (calibrations, templates, reference catalogues), storage (file and S3),
raws, the APDB, and ingest."""
