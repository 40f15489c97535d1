"""The query stage: a question -> the ranked chunks of the index that answer it."""
