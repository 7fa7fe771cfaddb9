"""The run store: run folders (`runs`), checkpoints, logits, models and their checked read-back."""
