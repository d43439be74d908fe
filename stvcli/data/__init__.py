"""Data sources, tasks, prompts and sampling of demonstrations."""
