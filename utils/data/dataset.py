"""Torch datasets over records, and the collate function.

A batch is ``(images [B, 3, H, W] float in [0, 1] RGB, targets [M, 6])`` with targets
``(image index in the batch, class, x1, y1, x2, y2)`` in input pixels (../shared/DESIGN.md).

Augmentation is a function of ``(seed, epoch, index)``: each sample draws from its own
``numpy.random.Generator``, so the stream is the same whatever the number of workers or the
sampler's split across ranks. The training loader's :class:`EpochSampler` hands each worker the
epoch with the index, so the loader and its workers last the whole run (no start-up per epoch).
Difficult objects are not training targets (they stay in the records for evaluation). An image
that fails to decode during an epoch (it passed the checks when the split was read, then changed
on disk) is replaced by another sample and logged; it never stops the epoch.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.data.augment import AugmentParams, hsv_jitter, letterbox, letterbox_boxes, letterbox_info, mixup, mosaic, random_place
from utils.data.images import ImageReadError, read_image
from utils.data.records import Record

LOGGER = logging.getLogger(__name__)


def to_chw_rgb(img_bgr: np.ndarray) -> torch.Tensor:
    """[H, W, 3] uint8 BGR -> [3, H, W] uint8 RGB (made float in collate)."""
    return torch.from_numpy(np.ascontiguousarray(img_bgr[:, :, ::-1].transpose(2, 0, 1)))


class TrainDataset(Dataset):
    """Augmented training samples at ``size`` x ``size``: ``(image [3, S, S] uint8, targets [n, 5] float)``.

    ``mosaic`` / ``mixup`` are probabilities (mixup blends two mosaics, so it needs a mosaic);
    :meth:`set_epoch` switches both off for the last ``close_mosaic`` of ``epochs``.
    """

    def __init__(self, records: Sequence[Record], size: int, params: AugmentParams | None = None, *, mosaic: float = 0.5,
                 mixup: float = 0.0, close_mosaic: int = 0, epochs: int = 1, seed: int = 0) -> None:
        self.records = list(records)
        self.size = size
        self.params = params or AugmentParams()
        self.mosaic_p, self.mixup_p = mosaic, mixup
        self.close_mosaic, self.epochs = close_mosaic, epochs
        self.seed = seed
        self.epoch = 0
        self.failures = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        """The epoch of ``dataset[index]``; a loader's workers get theirs from :class:`EpochSampler` instead."""
        self.epoch = epoch

    def mosaic_on_in(self, epoch: int) -> bool:
        """Whether mosaic (and mixup) may be drawn in ``epoch``: off for the last ``close_mosaic`` epochs."""
        return epoch < self.epochs - self.close_mosaic

    @property
    def mosaic_on(self) -> bool:
        return self.mosaic_on_in(self.epoch)

    def load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image BGR, boxes [n, 4], labels [n]) of a record, difficult objects removed; a failed decode
        is logged and replaced by another record."""
        for _ in range(10):
            rec = self.records[index]
            try:
                img = read_image(rec.path)
            except ImageReadError as e:
                self.failures += 1
                LOGGER.warning("%s; using another image in its place", e)
                index = (index + 1 + int(rng.integers(max(len(self.records) - 1, 1)))) % len(self.records)
                continue
            keep = ~rec.difficult
            boxes, labels = rec.boxes[keep], rec.labels[keep]
            if img.shape[:2] != (rec.height, rec.width):  # the file changed since it was read; rescale the boxes
                sy, sx = img.shape[0] / rec.height, img.shape[1] / rec.width
                boxes = boxes * np.array([sx, sy, sx, sy], np.float32)
            return img, boxes.astype(np.float32), labels
        raise ImageReadError("10 images in a row could not be decoded; is the dataset still there?")

    def _single(self, index: int, rng: np.random.Generator):
        img, boxes, labels = self.load(index, rng)
        return random_place(img, boxes, labels, self.size, rng, self.params)

    def _mosaic(self, index: int, rng: np.random.Generator):
        picks = [index] + [int(i) for i in rng.integers(len(self.records), size=3)]
        return mosaic([self.load(i, rng) for i in picks], self.size, rng, self.params)

    def __getitem__(self, key: int | tuple[int, int, bool]) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample ``key``: an index (in the epoch of :meth:`set_epoch`), or :class:`EpochSampler`'s
        ``(index, epoch, mosaic on)``."""
        index, epoch, mosaic_on = key if isinstance(key, tuple) else (key, self.epoch, self.mosaic_on)
        rng = np.random.default_rng([self.seed, epoch, index])
        if mosaic_on and rng.random() < self.mosaic_p:
            img, boxes, labels = self._mosaic(index, rng)
            if rng.random() < self.mixup_p:
                other = self._mosaic(int(rng.integers(len(self.records))), rng)
                img, boxes, labels = mixup((img, boxes, labels), other)
        else:
            img, boxes, labels = self._single(index, rng)
        img = hsv_jitter(img, rng, self.params.hsv)
        targets = np.concatenate([labels[:, None].astype(np.float32), boxes], 1) if len(labels) else np.zeros((0, 5), np.float32)
        return to_chw_rgb(img), torch.from_numpy(targets)


class LetterboxDataset(Dataset):
    """Evaluation / inference samples: ``(image [3, S, S] uint8, index, Letterbox)``, no augmentation.

    An image that fails to decode gives ``(None, index, None)``, logged; :func:`collate_letterbox`
    leaves it out of the batch and lists it, so that evaluation counts and skips it.
    """

    def __init__(self, records: Sequence[Record], size: int) -> None:
        self.records = list(records)
        self.size = size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        try:
            img = read_image(self.records[index].path)
        except ImageReadError as e:
            LOGGER.warning("%s; left out of the evaluation", e)
            return None, index, None
        out, info = letterbox(img, self.size)
        return to_chw_rgb(out), index, info

    def targets(self, index: int) -> np.ndarray:
        """Non-difficult boxes of a record in input pixels, ``[n, 5]`` (class, x1, y1, x2, y2)."""
        rec = self.records[index]
        keep = ~rec.difficult
        info = letterbox_info(rec.width, rec.height, self.size)
        return np.concatenate([rec.labels[keep, None].astype(np.float32), letterbox_boxes(rec.boxes[keep], info)], 1)

    def batch_targets(self, indices: Sequence[int]) -> torch.Tensor:
        """The targets of a batch of these records, ``[M, 6]`` = (image index in the batch, class, x1, y1, x2, y2)."""
        return torch.cat([torch.cat([torch.full((len(t), 1), float(j)), torch.from_numpy(t)], 1)
                          for j, t in enumerate(self.targets(i) for i in indices)])


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack images as float in [0, 1]; targets ``[M, 6]`` with the image index first."""
    images = torch.stack([b[0] for b in batch]).float().div_(255)
    targets = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, (_, t) in enumerate(batch)]
    return images, torch.cat(targets) if targets else torch.zeros(0, 6)


def collate_letterbox(batch):
    """Stack letterboxed images as float in [0, 1]; keep indices and Letterbox infos as lists, and
    the indices of images that failed to decode as a fourth list (``images`` is None when all did)."""
    good = [b for b in batch if b[0] is not None]
    images = torch.stack([b[0] for b in good]).float().div_(255) if good else None
    return images, [b[1] for b in good], [b[2] for b in good], [b[1] for b in batch if b[0] is None]


def worker_init(worker_id: int) -> None:  # noqa: ARG001
    """DataLoader workers: no OpenCV threads (they compete with the workers), and Ctrl-C left to the main
    process, which finishes its step and saves (a terminal's Ctrl-C reaches every process of its group).
    SIGTERM keeps its default: the DataLoader itself stops its workers with it."""
    import signal

    import cv2

    cv2.setNumThreads(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class EpochSampler(torch.utils.data.Sampler):
    """The training order as ``(index, epoch, mosaic on)`` keys for :meth:`TrainDataset.__getitem__`.

    One rank: a permutation of the dataset drawn from ``seed + epoch`` (what a ``RandomSampler`` with a
    generator seeded so gives); several: ``DistributedSampler``'s share for the rank. A sampler runs in the
    main process, so :meth:`set_epoch` reaches workers that persist across epochs through the keys, and an
    epoch's order does not depend on the epochs before it (a resumed run sees the same batches).
    """

    def __init__(self, dataset: TrainDataset, seed: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = False) -> None:
        from torch.utils.data import DistributedSampler

        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.shard = (DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                         drop_last=drop_last) if world_size > 1 else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shard is not None:
            self.shard.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.shard) if self.shard is not None else len(self.dataset)

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        if self.shard is not None:
            order = list(self.shard)
        else:
            order = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        mosaic_on = self.dataset.mosaic_on_in(self.epoch)
        return iter([(i, self.epoch, mosaic_on) for i in order])


def build_train_loader(dataset: TrainDataset, batch_size: int, workers: int = 0, seed: int = 0,
                       rank: int = 0, world_size: int = 1, drop_last: bool | None = None) -> torch.utils.data.DataLoader:
    """A shuffling loader over ``dataset`` for the whole run (or a phase of it): call ``loader.sampler.set_epoch(e)``
    before each epoch (:class:`EpochSampler`). Its workers persist across epochs; with ``world_size > 1`` each
    rank gets its share.

    ``drop_last=None`` drops an epoch's last, partial batch only where each rank has at least one full
    batch: a split smaller than one batch trains on a smaller batch, never zero steps.
    """
    from torch.utils.data import DataLoader

    if drop_last is None:
        drop_last = math.ceil(len(dataset) / world_size) >= batch_size
    sampler = EpochSampler(dataset, seed, rank, world_size, drop_last)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      drop_last=drop_last, worker_init_fn=worker_init if workers else None,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0)
