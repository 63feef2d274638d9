"""Reading: one module per reader (video files, network streams and cameras, pipes, image folders),
the `Frame` they yield, the `Sampler` that picks frames, and `open_source`, which picks the reader."""
