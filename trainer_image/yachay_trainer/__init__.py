"""Yachay's trainer: LoRA fine-tuning of one job, run by Cloud Batch (locally, a subprocess).

Entry point: `python -m yachay_trainer`, configured by the environment that
`shared.contract.TrainerConfig.to_env()` produces.
"""
