"""wiou-bench: side-by-side timings of the seed class and every wiou_ops implementation."""
