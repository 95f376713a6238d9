"""What users run on top: batch predict, the cache inspector and the command lines."""
