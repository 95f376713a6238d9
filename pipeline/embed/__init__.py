"""The encoders: CLIP and SigLIP loaded with their own preprocessing, on torch or ONNX Runtime; frames to embeddings."""
