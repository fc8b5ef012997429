"""Analysis: reads architectures, device profiles and run directories; never runs models."""
