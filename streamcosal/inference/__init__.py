"""Inference: the engine (:class:`~streamcosal.inference.engine.CoSalEngine`, the user-facing
predictor around the GICD network), its transforms (frames in, maps out), the optimisations applied to
the network (BatchNorm folding, same-padding, compile), precision, device and the embedded weights."""
