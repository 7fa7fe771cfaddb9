"""The run store: run folders, checkpoints, logits, and their checked read-back."""

from logitscope.store.errors import DamagedFileError, load_npy, load_npz, read_json, read_text, read_yaml

__all__ = ["DamagedFileError", "load_npy", "load_npz", "read_json", "read_text", "read_yaml"]
