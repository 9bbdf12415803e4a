"""Shapes of the tiny random checkpoints the LLM tests write with ``save_pretrained``."""

LLAMA_SHAPE = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 256,
    "initializer_range": 0.1,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

GPT2_SHAPE = {
    "vocab_size": 256,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_positions": 256,
    "initializer_range": 0.2,  # smaller ones make greedy GPT-2 repeat one token forever
    "bos_token_id": 0,
    "eos_token_id": 0,
}
