"""Kernels that no default path runs yet, kept to be measured (see each module)."""
