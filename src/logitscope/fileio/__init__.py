"""The lowest layer: files written atomically and read back with one-line errors, torch files
as plain data. Nothing here knows about runs; the store (`logitscope.store`) builds on it."""
