"""Baselines beside D2LLM: the BeLLM-style bi-encoder (bi_encoder, bi_encoder_losses, trainer_bi_encoder) and
LLM-QL query-likelihood pre-training (llmql, pretrain_ql). See docs/bellm_llmql.md."""
