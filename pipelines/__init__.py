"""The pipeline: one DAG definition rendered to KFP or run locally."""
