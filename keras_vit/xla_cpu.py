"""Which library runs the matrix products of XLA-compiled steps on the CPU.

XLA's CPU compiler emits its own loops for matrix products unless `XLA_FLAGS` hands them to a
library. Handing them to YNNPACK (`--xla_cpu_experimental_ynn_fusion_type=individual_dot`) made
keras_vit's XLA-compiled training steps 1.16x (the demo's model) to 1.20x (the shipped hybrid)
faster, with the same losses to float rounding; oneDNN and XNNPACK were slower there
(`benchmarks/xla_dots.py`, benchmarks/RESULTS.md, "Sixth round"). The `keras-vit` training
commands ask for it (`--xla_ynnpack`, on by default); in your own scripts set `XLA_FLAGS` yourself
or call `use_ynnpack_dots()` first.

XLA reads `XLA_FLAGS` once per process, at its first compilation: a call after that changes nothing.
The flag is a CPU one; GPUs and TPUs ignore it.
"""

import os

FUSION_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
YNNPACK_DOTS = FUSION_FLAG + "=individual_dot"


def use_ynnpack_dots(environ=None):
    """Adds `YNNPACK_DOTS` to `XLA_FLAGS` in `environ` (default `os.environ`), unless `XLA_FLAGS`
    already says which YNNPACK fusions to use (`--xla_cpu_experimental_ynn_fusion_type=` with no
    value keeps XLA's own products). Returns whether it added the flag."""
    environ = os.environ if environ is None else environ
    flags = environ.get("XLA_FLAGS", "")
    if FUSION_FLAG in flags:
        return False
    environ["XLA_FLAGS"] = f"{flags} {YNNPACK_DOTS}".strip()
    return True
