"""`entspec bench`: entspec vs plain decoding vs Hugging Face assisted generation."""
