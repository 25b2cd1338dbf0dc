"""Online kNN monitor: how well the backbone's pooled features separate held-out images, during pretraining.

Every `monitor.knn_every_epochs` epochs (and after the last one) the backbone, in eval mode, embeds a
fixed bank of training images (`bank_per_class` per class, centre crops, no augmentation) and a fixed
set of held-out images (`monitor.val_root`, or the generated data's `val/` split), and each held-out
image is classified by a weighted vote of its k nearest bank images (cosine similarity, weight
exp(similarity / temperature): Wu et al. 2018, as in DINO's and solo-learn's kNN monitors). A watch on
the run, not a benchmark and not a selection criterion: it never changes the training state (no
gradients, BatchNorm statistics untouched, no draw from the global random generator).

Each process embeds every world_size-th image of both sets; the features are gathered on every rank.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from pretrain.config import Config
from pretrain.data import IndexedImageFolder, eval_transform, read_coarse_map, train_root
from pretrain.distributed import gather_all
from pretrain.errors import UserError


def knn_predict(train: torch.Tensor, train_labels: torch.Tensor, query: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """The class each `query` row gets from the weighted vote of its k most cosine-similar `train` rows."""
    train = F.normalize(train.float(), dim=1)
    train_labels = train_labels.to(train.device)
    predictions = []
    for start in range(0, len(query), chunk):
        sims = F.normalize(query[start:start + chunk].float().to(train.device), dim=1) @ train.T
        top, index = sims.topk(min(k, len(train)), dim=1)
        votes = torch.zeros(len(top), num_classes, device=train.device)
        votes.scatter_add_(1, train_labels[index], (top / temperature).exp())
        predictions.append(votes.argmax(1))
    return torch.cat(predictions)


def per_class_subset(targets: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Sorted indices of up to `per_class` images of every class, drawn with a fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(targets), generator=generator)
    chosen = [order[targets[order] == c][:per_class] for c in targets.unique()]
    return torch.cat(chosen).sort().values


def held_out_root(config: Config) -> Path:
    if config.monitor.val_root is not None:
        return Path(config.monitor.val_root)
    if config.data.root is None:  # the generated data has its own held-out split
        return train_root(config.data).parent / "val"
    raise UserError("monitor.knn_every_epochs is set but monitor.val_root is not: name a folder of held-out "
                    "images of the training classes (e.g. ImageNet's val/ in class folders)")


class KnnMonitor:
    """Built once per run (the image lists are fixed); `measure(backbone)` returns the metrics."""

    def __init__(self, config: Config, train_classes: list[str], rank: int, world_size: int,
                 device: torch.device):
        monitor = config.monitor
        coarse = read_coarse_map(config.data.coarse_map) if config.data.coarse_map else None
        transform = eval_transform(config.data)
        bank = IndexedImageFolder(train_root(config.data), transform=transform, coarse_map=coarse)
        queries = IndexedImageFolder(held_out_root(config), transform=transform, coarse_map=coarse)
        if queries.classes != train_classes:
            raise UserError(f"monitor.val_root {queries.root}: its classes differ from the training set's "
                            f"({len(queries.classes)} vs {len(train_classes)} classes)")
        bank_index = per_class_subset(bank.targets, monitor.bank_per_class, seed=0)
        query_index = torch.arange(len(queries))
        if len(query_index) > monitor.max_queries:
            generator = torch.Generator().manual_seed(1)
            query_index = torch.randperm(len(queries), generator=generator)[:monitor.max_queries].sort().values
        self.sets = {"bank": (bank, bank_index), "queries": (queries, query_index)}
        self.num_classes = len(train_classes)
        self.config, self.rank, self.world_size, self.device = config, rank, world_size, device

    def _features(self, backbone: torch.nn.Module, name: str, autocast: contextlib.AbstractContextManager
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        dataset, index = self.sets[name]
        # rank r embeds the r-th block of the images; blocks are padded to one size for the gather
        share = -(-len(index) // self.world_size)
        mine = index[self.rank * share:(self.rank + 1) * share]
        loader = DataLoader(Subset(dataset, mine.tolist()), batch_size=self.config.monitor.batch_size,
                            num_workers=self.config.data.workers, generator=torch.Generator(),
                            pin_memory=self.device.type == "cuda")
        local = torch.zeros(share, backbone.num_features, device=self.device)
        filled = 0
        for images, _, _ in loader:
            with autocast:
                batch = backbone(images.to(self.device, non_blocking=True))
            local[filled:filled + len(batch)] = batch.float()
            filled += len(batch)
        features = gather_all(local).flatten(0, 1)[:len(index)]  # the blocks in rank order: the image order
        return features, dataset.targets[index].to(self.device)

    @torch.no_grad()
    def measure(self, backbone: torch.nn.Module, autocast: contextlib.AbstractContextManager) -> dict[str, float]:
        start = time.perf_counter()
        was_training = backbone.training
        backbone.eval()
        try:
            bank, bank_labels = self._features(backbone, "bank", autocast)
            queries, query_labels = self._features(backbone, "queries", autocast)
        finally:
            backbone.train(was_training)
        monitor = self.config.monitor
        predicted = knn_predict(bank, bank_labels, queries, self.num_classes, monitor.k, monitor.temperature)
        return {"knn_top1": 100 * (predicted == query_labels).float().mean().item(), "bank": len(bank),
                "queries": len(queries), "seconds": time.perf_counter() - start}
