"""Execution on datatrove: readers, an atomic shard writer, the stage step base class, the runner and summaries."""
