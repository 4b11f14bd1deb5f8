"""Live availability: per-lot counts recomputed after commit, cached, mirrored and streamed."""
