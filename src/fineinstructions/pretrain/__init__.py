"""Pre-training from scratch on a corpus: tokenizer, packed data, model, training loop."""
