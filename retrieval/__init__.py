"""Search over a corpus with a D2LLM student, behind ``search.py``: exact IEM top-k scoring (scoring) and the
approximate first stage over embeddings (ann). See docs/search.md."""
