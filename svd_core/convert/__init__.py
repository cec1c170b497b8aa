"""Renaming tables between the diffusers/transformers folder layout and ours (the official names)."""
