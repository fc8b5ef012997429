"""Model sources: what a spec names (synth presets, Hugging Face folders and Hub ids, GGUF files), its architecture and its tensors."""
