"""Everything before training: the base model and tokenizer, quantisation, hub reachability, and an adapter to start from."""
