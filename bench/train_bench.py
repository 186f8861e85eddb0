"""Benchmark of ``geoclass train``: how much the streaming data path costs.

Runs, in one process and on the same model, batch size, threads and memory format:

1. **bare step**: forward + backward + AdamW step on a batch already in memory (the bound);
2. **loader only**: the training DataLoader (lazy chip reads, radiometry, augmentation,
   normalisation in worker processes) iterated with no model, chips/s;
3. **geoclass train**: a real ``geoclass.engine.train.train`` run on a subset of EuroSAT RGB
   (3 epochs; the mean images/s of epochs 2 and 3 is used, so worker start-up is not counted, and
   the chips come from the decoded-chip cache the first epoch filled, as in every epoch after the
   first of a real run; ``--no-cache`` reads the chip files every epoch).

The bare step is measured just before and just after the training run and averaged: on a shared
machine the CPU's speed drifts by 10-20% within minutes, which a single measurement would put
into the ratio.

and prints ``train / bare`` (1.0 means the data path is completely hidden behind compute) and the
data-path cost ``1 - train / bare``. On a machine with few cores the loader workers compete with
the model's own threads for the same cores, so the cost there is a CPU budget, not latency.

    python bench/train_bench.py                        # compact, 1,600 chips, CPUs - 1 workers
    python bench/train_bench.py --model cnn --chips 3200 --workers 1
    python bench/train_bench.py --no-cache             # decode every chip file every epoch
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eurosat-rgb"


def bare_step_rate(model_name: str, batch_size: int, steps: int, num_classes: int = 10) -> float:
    """Images/s of forward + backward + AdamW on one in-memory batch, channels_last, fp32 on CPU."""
    import torch
    from torch import nn

    from geoclass.models.registry import create_model

    torch.manual_seed(0)
    model = create_model(model_name, num_classes, 3, chip_size=64).to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    images = torch.randn(batch_size, 3, 64, 64).to(memory_format=torch.channels_last)
    targets = torch.randint(0, num_classes, (batch_size,))

    def step() -> None:
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - start)


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
    from geoclass.data.transforms import Augmenter, train_augmentation
    from geoclass.models.model_file import ModelMeta

    samples = load_samples(data, split)
    meta = ModelMeta(architecture="compact", task="classify", classes=samples.classes, in_chans=3, chip_size=64,
                     mean=[100.0] * 3, std=[50.0] * 3, train_dtype="uint8")
    cache = None
    if cache_dir is not None:
        cache = ChipCache(cache_dir, [str(s.path) for s in samples.samples], (3, 64, 64), "uint8")
    dataset = ChipDataset(samples.samples, meta, None, Augmenter(train_augmentation("strong"), 255.0), cache)
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


def train_rate(model_name: str, data: Path, split: Path, val_split: Path, batch_size: int, workers: int,
               run_dir: Path, cache: bool) -> float:
    """Training images/s of ``geoclass train``, epochs 2-3 (data path + step + bookkeeping)."""
    from geoclass.engine.train import TrainConfig, train

    config = TrainConfig(data=str(data), model=model_name, out_dir=str(run_dir), split_csv=str(split),
                         val_split_csv=str(val_split), epochs=3, batch_size=batch_size, workers=workers,
                         augment=True, patience=0, cache=cache)
    train(config)
    with (run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    return sum(float(row["train_images_per_s"]) for row in rows[1:]) / len(rows[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="EuroSAT-style class folders")
    parser.add_argument("--model", default="compact")
    parser.add_argument("--chips", type=int, default=1600, help="training chips per epoch")
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

    import torch

    with tempfile.TemporaryDirectory(prefix="geoclass-train-bench-") as tmp:
        tmp_path = Path(tmp)
        split = write_subset(args.data, args.chips, tmp_path / "train.csv", seed=0)
        val_split = write_subset(args.data, 200, tmp_path / "val.csv", seed=1)
        steps = max(10, args.chips // args.batch_size)
        bare_before = bare_step_rate(args.model, args.batch_size, steps)
        trained = train_rate(args.model, args.data, split, val_split, args.batch_size, args.workers, tmp_path / "run",
                             args.cache)
        bare_after = bare_step_rate(args.model, args.batch_size, steps)
        bare = (bare_before + bare_after) / 2
        loading = loader_rate(args.data, split, args.batch_size, args.workers,
                              tmp_path / "cache" if args.cache else None)

    result = {
        "model": args.model, "chips": args.chips, "batch_size": args.batch_size, "workers": args.workers,
        "cache": args.cache,
        "torch_threads": torch.get_num_threads(),
        "bare_step_images_per_s": round(bare, 1),
        "bare_before_after": [round(bare_before, 1), round(bare_after, 1)],
        "loader_only_chips_per_s": round(loading, 1),
        "train_images_per_s": round(trained, 1),
        "train_over_bare": round(trained / bare, 3),
        "data_path_cost": round(1 - trained / bare, 3),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"model {args.model}, batch {args.batch_size}, {args.workers} workers, {result['torch_threads']} torch threads, "
          f"chip cache {'on' if args.cache else 'off'}")
    print(f"bare fwd+bwd+step (in memory): {bare:8.1f} img/s (before {bare_before:.1f}, after {bare_after:.1f})")
    print(f"loader alone (read+augment):   {loading:8.1f} chips/s")
    print(f"geoclass train (epoch 2):      {trained:8.1f} img/s")
    print(f"train / bare = {trained / bare:.3f}   data-path cost = {1 - trained / bare:.1%} (target <= 10%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
