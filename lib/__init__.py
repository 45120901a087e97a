"""Shared code for polypseg: config, io, schema checks, splits, preprocessing, transforms, metrics, model."""
