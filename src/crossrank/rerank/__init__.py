"""Stage 2: score (query, document) pairs with a cross-encoder and rerank candidates."""
