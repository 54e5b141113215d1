"""CPU time of the training input pipeline alone, per epoch: the work `fit` shares the cores with.

Iterates the training batches of the real Fashion-MNIST training set (cached, shuffled, flips,
and the flags' crop or shifts) as `keras-vit demo` builds them, without a model: numbered passes
over the data chained by `keras_vit.data.passes`, one iterator across the epochs. Prints each
epoch's wall and CPU seconds (user + system, this process) and the median. `--reshuffle` times
instead one `keras_vit.data.pipeline` iterated again each epoch (reshuffled by TensorFlow's own
state, the pipeline's `epoch=None`).

    python benchmarks/pipeline.py                      # the demo's pipeline: flips, no crop
    python benchmarks/pipeline.py --translate 2        # shifts: images are prepared one by one
"""

import argparse
import os
import statistics
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="the first is left out of the median (cache fill)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--translate", type=int, default=0)
    parser.add_argument("--crop_area_min", type=float, default=1.0, help="below 1: Inception crop")
    parser.add_argument("--max_examples", type=int, default=None)
    parser.add_argument("--reshuffle", action="store_true", help="one pipeline iterated again each epoch")
    args = parser.parse_args()

    from keras_vit import data

    source, names = data.load("fashion_mnist", "train")
    if args.max_examples:
        source = source.take(args.max_examples)
    area = None if args.crop_area_min >= 1 else (args.crop_area_min, 1.0)
    settings = dict(image_size=28, batch_size=args.batch, num_classes=len(names), training=True, area_range=area,
                    translate=args.translate)
    if args.reshuffle:
        dataset = data.pipeline(source, cache=True, **settings)
        epochs = (iter(dataset) for _ in range(args.epochs))
    else:
        per_pass = data.count(source) // args.batch
        cached = source.cache()
        stream = iter(data.passes(lambda k: data.pipeline(cached, epoch=k, **settings), per_pass))
        epochs = ((next(stream) for _ in range(per_pass)) for _ in range(args.epochs))
    cpu = []
    print("| epoch | batches | wall s | CPU s |\n|---|---|---|---|")
    for epoch, batches_of_epoch in enumerate(epochs):
        start, before = time.perf_counter(), os.times()
        batches = sum(1 for _ in batches_of_epoch)
        after = os.times()
        seconds = after.user - before.user + after.system - before.system
        print(f"| {epoch + 1} | {batches} | {time.perf_counter() - start:.2f} | {seconds:.2f} |")
        if epoch:
            cpu.append(seconds)
    if cpu:
        print(f"\nmedian CPU seconds per epoch after the first: {statistics.median(cpu):.2f}")


if __name__ == "__main__":
    main()
