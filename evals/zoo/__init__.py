"""The zoo: a shared tokenizer and small Llama models trained here, reproducibly."""
