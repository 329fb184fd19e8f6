"""Model training (NER and text detector). Filled in by the training issue; nothing here yet."""
