"""The run: a job over sources (pipeline), its windows, the consensus (global or streaming), the
sink (rows, events, overlays), live readers, metrics, and the records they fill."""
