"""The GPT, its training loop and KV-cached generation. Plain PyTorch: no Prefect, no MLflow."""
