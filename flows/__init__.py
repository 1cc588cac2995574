"""Prefect flows of methyl-distill: one per stage, plus the end-to-end pipeline."""
