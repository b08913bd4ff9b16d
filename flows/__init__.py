"""Prefect flows, MLflow tracking and the CLI: the only package that knows about them."""
