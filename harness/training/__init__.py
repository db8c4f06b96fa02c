"""The training engine: trainer, step, optimizer and schedule, held-out validation, placement and process groups, fine-tuning methods."""
