"""gptforge: a folder of documents in, a GPT trained from scratch out.

The installed package is the one import name `gptforge`; its parts are `gptforge.pipeline`
(ingestion), `gptforge.model` (the GPT, training, generation) and `gptforge.flows` (Prefect
flows, MLflow tracking, the CLI). In the repository they live at the root as `pipeline/`,
`model/` and `flows/`, mapped under this package by `pyproject.toml`.
"""
