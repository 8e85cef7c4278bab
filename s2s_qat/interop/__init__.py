"""Interoperability with other toolkits' checkpoints (Hugging Face Marian / BART)."""
