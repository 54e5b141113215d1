# The README's two commands: `make demo` (the main job) and `make test`.
# Each installs what it needs first, so both work on a fresh machine.
PYTHON ?= python3
FASHION_MNIST ?= /usr/share/datasets/fashion-mnist

.PHONY: install install-test install-bench data test test-fast demo bench

install:
	$(PYTHON) -m pip install -e .

install-test:
	$(PYTHON) -m pip install -e ".[test]"

install-bench:
	$(PYTHON) -m pip install -e ".[bench]"

# Offline machines get Fashion-MNIST's original files from Debian's package.
data:
	@if [ ! -d "$(FASHION_MNIST)" ] && command -v apt-get >/dev/null; then \
		apt-get update && apt-get install -y dataset-fashion-mnist; \
	fi

# Two pytest worker processes (pytest-xdist), each module's tests in one of them: on 2 cores one process
# keeps only about one core busy (compilation and Python between TensorFlow's ops). TEST_WORKERS=0 runs
# the suite in this process.
TEST_WORKERS ?= 2
PYTEST = $(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadscope

test: install-test data
	$(PYTEST)

test-fast: install-test data
	$(PYTEST) -m "not slow"

# The main job: train a small hybrid ViT on Fashion-MNIST, evaluate, save, export, plot (measured
# 14.8 min on 2 cores, the install already done, 90.94% test accuracy; outputs in demo_output/). `make demo DEMO_FLAGS=--quick` takes about two minutes.
DEMO_FLAGS ?=
demo: install data
	keras-vit demo $(DEMO_FLAGS)

# Every benchmark behind benchmarks/RESULTS.md and the README's speed table, peers (timm, keras-hub)
# in the same processes; each prints a Markdown table. Hours on 2 cores; run it on an otherwise idle
# machine: ratios within one run hold, absolute figures drift between runs.
bench: install-bench data
	$(PYTHON) benchmarks/ceiling.py
	$(PYTHON) benchmarks/matmul_bound.py --variant Ti/16 --size 224 --batch 32 --mode train --rounds 3
	$(PYTHON) benchmarks/matmul_bound.py --variant B/16 --size 224 --batch 8 --mode infer --rounds 3
	$(PYTHON) benchmarks/matmul_bound.py --variant B/16 --size 224 --batch 8 --mode infer --bf16 --rounds 3
	$(PYTHON) benchmarks/inference.py --variants Ti/16,B/16 --batches 1,8 --sizes 224,384 --rounds 3 --runs 5
	$(PYTHON) benchmarks/inference.py --variants B/16 --batches 8 --sizes 224 --rounds 3 --runs 5 --bf16
	$(PYTHON) benchmarks/scaling.py --variant Ti/16 --sizes 224,384,512 --batch 1 --plot benchmarks/scaling.png
	$(PYTHON) benchmarks/training.py --variant Ti/16 --size 224 --batch 32 --rounds 3
	$(PYTHON) benchmarks/training.py --variant Ti/16 --size 224 --batch 32 --rounds 3 --runs 3 --bf16
	$(PYTHON) benchmarks/training.py --variant fmnist --rounds 3
	$(PYTHON) benchmarks/xla_dots.py --variant fmnist --mode train --rounds 5 --runs 10 --settings xla,plain,ynn,onednn,xnn
	$(PYTHON) benchmarks/xla_dots.py --variant 56/2,2/32/4/128/1 --rounds 5 --runs 2 --settings xla,ynn,ynn_conv,onednn,xnn
	$(PYTHON) benchmarks/memory.py --variant Ti/16 --batches 1 8 32
	$(PYTHON) benchmarks/pipeline.py
	$(PYTHON) benchmarks/edge.py --variant Ti/16 --rounds 5 --runs 20
	$(PYTHON) benchmarks/edge.py --variant B/16 --rounds 5 --runs 20
	$(PYTHON) benchmarks/edge_fashion_mnist.py
	$(PYTHON) benchmarks/bf16_agreement.py
