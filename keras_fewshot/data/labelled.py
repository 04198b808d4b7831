"""Labelled images, whatever their source: the common form episodes are drawn from."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class LabelledImages:
    """Images with contiguous class labels.

    images: uint8 [M, H, W, C] (the loaders for training and evaluation give model
    resolution, [M, size, size, 1]); labels: int32 [M] in [0, C); class_names: C names;
    groups: int32 [C] group of each class (Omniglot's alphabet, used by within-alphabet
    episodes; 0 for every class of a source without groups); drawers: None, or int32 [M]
    who drew each image (Omniglot's drawer 1..20, loaded on request for Lake's one-shot
    runs, whose episodes take support and queries from two drawers).
    """
    images: np.ndarray
    labels: np.ndarray
    class_names: tuple
    groups: np.ndarray
    drawers: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def select_classes(self, classes) -> LabelledImages:
        """The examples of `classes` (indices, in the given order), relabelled 0..len-1."""
        classes = np.asarray(classes, np.int64)
        relabel = np.full(self.num_classes, -1, np.int64)
        relabel[classes] = np.arange(len(classes))
        keep = relabel[self.labels] >= 0
        return LabelledImages(self.images[keep], relabel[self.labels[keep]].astype(np.int32),
                              tuple(self.class_names[c] for c in classes),
                              self.groups[classes],
                              None if self.drawers is None else self.drawers[keep])

    def check_episodes(self, ways, shots, queries, what="the data"):
        """Raises ValueError, naming the problem, unless every class can fill N-way K-shot
        Q-query episodes: at least N classes, at least K + Q examples in each class."""
        if self.num_classes < ways:
            raise ValueError(f"{what} has {self.num_classes} classes; {ways}-way episodes need "
                             f"at least {ways}")
        counts = np.bincount(self.labels, minlength=self.num_classes)
        small = np.flatnonzero(counts < shots + queries)
        if len(small):
            listed = ", ".join(f"{self.class_names[c]!r} ({counts[c]})" for c in small[:5])
            more = f" and {len(small) - 5} more" if len(small) > 5 else ""
            raise ValueError(f"{shots}-shot {queries}-query episodes need {shots + queries} "
                             f"examples per class; in {what}, {listed}{more} have fewer")
