"""Where state and results live: the FAISS consensus store and the Parquet results."""
