"""The transformer PHI NER model: synthetic data, tokenizer, training, ONNX export."""
