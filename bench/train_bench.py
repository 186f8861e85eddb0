"""Benchmark of ``geoclass train``: how much the streaming data path costs.

Runs, in one process and on the same model, batch size, threads and memory format:

1. **geoclass train**: a real ``geoclass.engine.train.train`` run on a subset of EuroSAT RGB, cut
   into many short epochs (10 batches each by default). Epoch 1 (worker start-up, filling the
   decoded-chip cache) is not counted; later epochs read the cache, as every epoch after the
   first of a real run does (``--no-cache``: read the chip files every epoch).
2. **bare step**, interleaved: whenever an epoch's training ends (at the start of its validation,
   outside the epoch's timing, with the loader workers idle) the bench runs the same number of
   forward + backward + AdamW steps of a second copy of the model on one batch already in memory.
   Each training epoch is compared with the mean of the bare blocks just before and just after
   it. On a shared machine the CPU's speed drifts by 10-40% within a minute; measuring the bound
   before and after a whole run put that drift into the ratio, interleaving cancels most of it.
3. **loader only**: the training DataLoader (cached chips, augmentation, normalisation in worker
   processes) iterated with no model, chips/s.

It prints ``train / bare`` per epoch pair, their median and the ratio of the totals (1.0 means the
data path is completely hidden behind compute), and the data-path cost ``1 - train / bare``. On a
machine with few cores the loader workers compete with the model's own threads for the same
cores, so the cost there is a CPU budget, not latency.

    python bench/train_bench.py                        # compact, 12 x 640 chips, CPUs - 1 workers
    python bench/train_bench.py --model cnn --epochs 20 --workers 1
    python bench/train_bench.py --no-cache             # decode every chip file every epoch
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eurosat-rgb"


class BareStep:
    """Forward + backward + AdamW of a model on one in-memory batch, channels_last, fp32 on CPU."""

    def __init__(self, model_name: str, batch_size: int, num_classes: int = 10) -> None:
        import torch
        from torch import nn

        from geoclass.models.registry import create_model

        self.model = create_model(model_name, num_classes, 3, chip_size=64).to(memory_format=torch.channels_last)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
        generator = torch.Generator().manual_seed(0)
        self.images = torch.randn(batch_size, 3, 64, 64, generator=generator).to(memory_format=torch.channels_last)
        self.targets = torch.randint(0, num_classes, (batch_size,), generator=generator)
        self.run(3)  # warm-up

    def run(self, steps: int) -> float:
        """Images/s over ``steps`` steps."""
        start = time.perf_counter()
        for _ in range(steps):
            loss = self.criterion(self.model(self.images), self.targets)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return steps * self.images.shape[0] / (time.perf_counter() - start)


def write_subset(data: Path, chips: int, out: Path, seed: int) -> Path:
    """A split CSV with ``chips`` chips drawn evenly from the class folders."""
    from geoclass.data.samples import load_samples

    by_class: dict[str, list[str]] = {}
    for sample in load_samples(data).samples:
        by_class.setdefault(sample.label, []).append(sample.path.name)
    rng = random.Random(seed)
    rows = []
    for name, files in sorted(by_class.items()):
        rows += [(f"{name}/{f}", name) for f in rng.sample(sorted(files), min(len(files), chips // len(by_class)))]
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return out


def loader_rate(data: Path, split: Path, batch_size: int, workers: int, cache_dir: Path | None) -> float:
    """Chips/s of the training DataLoader alone (reads, augmentation, normalisation), second pass.

    With ``cache_dir`` the first pass fills a decoded-chip cache there, as ``geoclass train`` does.
    """
    import torch
    from torch.utils.data import DataLoader

    from geoclass.data.chip_cache import ChipCache
    from geoclass.data.chips import ChipDataset, SeededSampler, init_chip_worker
    from geoclass.data.samples import load_samples
    from geoclass.data.transforms import Augmenter
    from geoclass.models.model_file import ModelMeta

    samples = load_samples(data, split)
    meta = ModelMeta(architecture="compact", task="classify", classes=samples.classes, in_chans=3, chip_size=64,
                     mean=[100.0] * 3, std=[50.0] * 3, train_dtype="uint8")
    cache = None
    if cache_dir is not None:
        cache = ChipCache(cache_dir, [str(s.path) for s in samples.samples], (3, 64, 64), "uint8")
    dataset = ChipDataset(samples.samples, meta, None, Augmenter("strong", 255.0), cache)
    generator = torch.Generator()
    loader = DataLoader(dataset, batch_size=batch_size, sampler=SeededSampler(len(dataset), generator),
                        num_workers=workers, persistent_workers=workers > 0, worker_init_fn=init_chip_worker,
                        prefetch_factor=4 if workers else None)
    rate = 0.0
    for epoch in range(2):
        generator.manual_seed(epoch)
        start, seen = time.perf_counter(), 0
        for images, _ in loader:
            seen += images.shape[0]
        rate = seen / (time.perf_counter() - start)
    return rate


def interleaved_rates(model_name: str, data: Path, split: Path, val_split: Path, batch_size: int, workers: int,
                      epochs: int, run_dir: Path, cache: bool) -> list[tuple[float, float]]:
    """(train images/s, bare images/s) for epochs 2..``epochs`` of a ``geoclass train`` run.

    The bare rate of epoch e is the mean of the bare blocks run right before and right after it.
    """
    from geoclass.engine.train import TrainConfig, train
    from geoclass.progress import ProgressEvent

    bare = BareStep(model_name, batch_size)
    steps = 0
    blocks: list[float] = []

    def between_epochs(event: ProgressEvent) -> None:
        nonlocal steps
        if event.kind == "start" and event.task == "train":
            steps = int(event.total or 1)
        elif event.kind == "start" and event.task == "val":
            blocks.append(bare.run(steps))

    config = TrainConfig(data=str(data), model=model_name, out_dir=str(run_dir), split_csv=str(split),
                         val_split_csv=str(val_split), epochs=epochs, batch_size=batch_size, workers=workers,
                         augment=True, patience=0, cache=cache)
    train(config, progress=between_epochs)
    with (run_dir / "metrics.csv").open() as handle:
        trained = [float(row["train_images_per_s"]) for row in csv.DictReader(handle)]
    return [(trained[e], (blocks[e - 1] + blocks[e]) / 2) for e in range(1, len(trained))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="EuroSAT-style class folders")
    parser.add_argument("--model", default="compact")
    parser.add_argument("--chips", type=int, default=640, help="training chips per epoch")
    parser.add_argument("--epochs", type=int, default=13, help="epochs (the first is not counted)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=max(0, min(4, (os.cpu_count() or 1) - 1)),
                        help="loader workers (default: as geoclass train, CPUs - 1)")
    parser.add_argument("--no-cache", dest="cache", action="store_false",
                        help="read every chip file every epoch (train's --no-cache)")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"{args.data}: EuroSAT RGB folder not found (pass --data)", file=sys.stderr)
        return 2
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not counted)")

    import torch

    with tempfile.TemporaryDirectory(prefix="geoclass-train-bench-") as tmp:
        tmp_path = Path(tmp)
        split = write_subset(args.data, args.chips, tmp_path / "train.csv", seed=0)
        val_split = write_subset(args.data, 64, tmp_path / "val.csv", seed=1)
        pairs = interleaved_rates(args.model, args.data, split, val_split, args.batch_size, args.workers,
                                  args.epochs, tmp_path / "run", args.cache)
        loading = loader_rate(args.data, split, args.batch_size, args.workers,
                              tmp_path / "cache" if args.cache else None)

    ratios = sorted(t / b for t, b in pairs)
    median = statistics.median(ratios)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [median, median, median]
    # Equal images per epoch: the ratio of total rates is the ratio of harmonic means.
    overall = statistics.harmonic_mean([t for t, _ in pairs]) / statistics.harmonic_mean([b for _, b in pairs])
    result = {
        "model": args.model, "chips_per_epoch": args.chips, "epochs_counted": len(pairs),
        "batch_size": args.batch_size, "workers": args.workers, "cache": args.cache,
        "torch_threads": torch.get_num_threads(),
        "train_images_per_s": [round(t, 1) for t, _ in pairs],
        "bare_step_images_per_s": [round(b, 1) for _, b in pairs],
        "loader_only_chips_per_s": round(loading, 1),
        "train_over_bare_median": round(median, 3),
        "train_over_bare_quartiles": [round(quartiles[0], 3), round(quartiles[2], 3)],
        "train_over_bare_overall": round(overall, 3),
        "data_path_cost": round(1 - median, 3),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {args.model}, batch {args.batch_size}, {args.workers} workers, {result['torch_threads']} torch threads, "
          f"chip cache {'on' if args.cache else 'off'}; {len(pairs)} epochs of {args.chips} chips counted")
    print(f"{'epoch':>5} {'train img/s':>12} {'bare img/s':>11} {'train/bare':>11}")
    for epoch, (t, b) in enumerate(pairs, start=2):
        print(f"{epoch:>5} {t:12.1f} {b:11.1f} {t / b:11.3f}")
    print(f"loader alone (read+augment): {loading:.1f} chips/s")
    print(f"train / bare: median {median:.3f} (quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}), "
          f"all epochs {overall:.3f}")
    print(f"data-path cost = {1 - median:.1%} (target <= 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
