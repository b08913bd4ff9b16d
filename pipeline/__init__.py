"""Documents -> text -> GPT-2 tokens -> llm.c shards. Plain Python: no Prefect, no MLflow."""
