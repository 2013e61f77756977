"""Evaluation of D2LLM students, teachers and bi-encoders through one code path (see ``evaluate_model.py``)."""
