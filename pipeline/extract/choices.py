"""The cache's choices by name, without numpy or h5py: the settings check them before stage one's workers' server
starts (stages/extract.py), and the cache (pipeline.extract.cache) writes by them."""
from __future__ import annotations

STORAGE_DTYPES = ("float32", "float16")  # how embeddings are stored (extract.dtype); they are read as float32
