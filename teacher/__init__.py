"""The teacher: a decoder LLM as a yes/no cross-encoder judge (model, prompts), its LoRA adaptation (adapt),
its scoring of fixed training batches (score) and its evaluation (evaluate). See docs/method.md."""
