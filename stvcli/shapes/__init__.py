"""The shapes world: a small real vision-language model built offline, and its tasks."""
