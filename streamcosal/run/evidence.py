"""What a video group's answer cannot say by itself, stated as notes of the run.

GICD always answers. A group of one frame has nothing to compare it with (its mask is the frame's own
salient object); a group whose frames show two unrelated objects (two cameras looking at different
things, a recording that cuts from one scene to another) gets one of them, or a mix, as its common
object; a group without any object gets maps that reach the threshold nowhere. `GroupEvidence` keeps,
while a group runs, an even sample of its frames' embeddings (the classifier's input, at most
``2 * limit``) and the highest value of its maps, and says at the end which of these it was: the
embeddings are split as an image group's are (:func:`~streamcosal.inference.agreement.group_agreement`).

    evidence = GroupEvidence("lobby")
    evidence.add(window, prediction)      # each window, as segmented
    report.notes += evidence.notes(threshold=0.5)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamcosal.inference.agreement import group_agreement
from streamcosal.inference.engine import GroupPrediction
from streamcosal.run.windows import Window


@dataclass
class GroupEvidence:
    """A group's sampled embeddings ([D] each, with their (source, frame index)), frames seen, map peak."""

    group: str
    limit: int = 64
    frames: list[tuple[str, int]] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    seen: int = 0
    peak: float = 0.0
    every: int = 1  # the sample keeps the frames seen at multiples of this

    def add(self, window: Window, prediction: GroupPrediction) -> None:
        """The window's emitted frames: prediction.maps [N,S,S], prediction.embeddings [N,D] or None."""
        emitted = [i for i, emit in enumerate(window.emit) if emit]
        if emitted:
            self.peak = max(self.peak, float(prediction.maps[emitted].max()))
        for i in emitted:
            if prediction.embeddings is not None and self.seen % self.every == 0:
                frame = window.frames[i]
                self.frames.append((frame.source, frame.index))
                self.embeddings.append(prediction.embeddings[i])
                if len(self.embeddings) > 2 * self.limit:  # keep every other one: still even over the group
                    self.frames, self.embeddings, self.every = self.frames[::2], self.embeddings[::2], self.every * 2
            self.seen += 1

    def notes(self, threshold: float) -> list[str]:
        """The group's notes: one frame, two objects (uncertain), no object reaching ``threshold``."""
        notes = []
        if self.seen == 1:
            notes.append(f"group {self.group!r} has one frame: with nothing to compare it with, its mask is the "
                         "frame's own salient object; co-saliency needs two or more frames of the object")
        agreement = group_agreement(np.stack(self.embeddings)) if len(self.embeddings) > 1 else None
        if agreement is not None and agreement.uncertain:
            halves = [self._named(half) for half in agreement.halves]
            notes.append(f"group {self.group!r} is uncertain: its frames look like two different objects "
                         f"({halves[0]}; {halves[1]}; similarity across the two {agreement.ratio:.2f} of within), so "
                         "its masks may follow either or both; give each object's video or camera a group of its own")
        if self.seen and self.peak < threshold:
            notes.append(f"group {self.group!r}: no common object found (no frame's map reaches the threshold "
                         f"{threshold:g}; highest {self.peak:.2f})")
        return notes

    def _named(self, half: list[int]) -> str:
        """'12 sampled frames: a.mp4 frames 0-88' or '... a.mp4 frames 0-40, b.mp4 frames 8-96'."""
        spans: dict[str, list[int]] = {}
        for i in half:
            source, index = self.frames[i]
            spans.setdefault(source, []).append(index)
        where = ", ".join(f"{Path(s).name} frames {min(ix)}-{max(ix)}" for s, ix in spans.items())
        return f"{len(half)} sampled frames: {where}"
