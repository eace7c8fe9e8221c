"""Publishing run directories as Hugging Face datasets (issue 7): dataset, card, hub upload."""
