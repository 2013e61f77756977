"""Distillation of the teacher into the D2LLM student, around ``trainer_d2llm.D2LLMTrainer``: the losses, the
gather across processes, the token-state cache and head warm-up, and the model card. See docs/training.md."""
