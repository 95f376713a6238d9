"""Stage one: videos through a reader and an embedder into the HDF5 feature cache, locally or on Ray."""
