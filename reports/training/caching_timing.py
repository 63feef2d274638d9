"""Does caching the frozen backbone's features pay? Time one training step's parts on this CPU.

    python reports/training/caching_timing.py [THREADS] [IMAGES]

Prints, per step of IMAGES random 224x224 images: the frozen part (Lite0 features, consensus,
GIM, CAM: what a feature cache would skip), the decoder's forward (with the loss), and its
backward plus the Adam step. A cache can save at most the first column.
"""

import sys
import time

import torch
import torch.nn.functional as F

from streamcosal.model import (GICD, build_backbone, class_activation_map, consensus_from_logits, gicd_loss,
                               gradient_induced_weights)

threads, n = (int(sys.argv[1]) if len(sys.argv) > 1 else 1), (int(sys.argv[2]) if len(sys.argv) > 2 else 10)
torch.set_num_threads(threads)
torch.manual_seed(0)
model = GICD(build_backbone("efficientnet_lite0"))
for p in model.backbone.parameters():
    p.requires_grad_(False)
model.train()
model.backbone.eval()
optimizer = torch.optim.Adam(model.decoder.parameters(), 1e-4, betas=(0.9, 0.99))
x, y = torch.randn(n, 3, 224, 224), (torch.rand(n, 1, 224, 224) > 0.5).float()
for i in range(4):
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = model.backbone.features(x)
        consensus = consensus_from_logits(model.consensus_logits(x, feats[4]))
        gim = gradient_induced_weights(model.backbone, feats[4], consensus)
        cam = class_activation_map(gim.induced)
    t1 = time.perf_counter()
    preds = model.decoder(feats[:4], gim.induced, cam)
    loss = gicd_loss([F.interpolate(p, size=(224, 224), mode="bilinear", align_corners=True) for p in [cam, *preds]], y)
    t2 = time.perf_counter()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    t3 = time.perf_counter()
    print(f"step {i} ({threads} thread(s), {n} images): frozen backbone+GIM {t1 - t0:.2f} s, decoder forward "
          f"{t2 - t1:.2f} s, backward+step {t3 - t2:.2f} s; frozen share {(t1 - t0) / (t3 - t0):.1%}", flush=True)
