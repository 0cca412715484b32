"""First-stage retrieval: BM25, dense and hybrid, over a persistent index, and the two-stage pipeline."""
