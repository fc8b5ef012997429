"""llama.cpp through llama-cpp-python (placeholder; the registry entry is added in the next step)."""
