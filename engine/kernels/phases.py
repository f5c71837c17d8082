"""Phases of one parallel loop: the whole decode step in one parallel region instead of one per
matrix product.

A decode step is a chain of small matrix products (q/k/v, attention output, gate/up, down, in
every layer), each needing the one before.  As one ``prange`` each, a 1.1B step opens ~90
parallel regions, and every region costs a wake-up of the sleeping OpenMP thread: on the 2-core
VMs we measured (``scripts/bench_regions.py``) 70–100 µs each with ``OMP_WAIT_POLICY=passive``
(the engine's default, since spinning collapses on shared cores), a third of a 1.1B step.

Here each thread runs the whole step (``prange`` over the threads, one region) and the products
are *phases*: a thread claims chunks of a phase's items (rows, heads) with an atomic counter
until none are left; the thread that finishes the phase's last item runs the serial work that
comes next (norms, quantizing the activations, RoPE) and opens the next phase.  The others wait
for it: a short spin (the serial work takes microseconds), then naps that give the core away (on
a shared machine this is meant to cost about what a sleeping OpenMP thread costs; not yet
measured under contention).  No thread waits for another
*thread*, only for work to be done: if the region ever ran its iterations one after the other on
one thread, that thread would do every phase itself (no deadlock, same result).

Each item is computed by the same code whichever thread runs it, so the results do not depend on
the split (bit for bit the same as the loop of one ``prange`` per product).

``Phases`` holds the counters of one step: per phase a cache line of int64 (items claimed, items
done, open); phase 0 is open from the start.
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_I64 = ir.IntType(64)
SPIN_PAUSES = 4096  # pause instructions a waiting thread spins before napping (~20-60 µs)
NAP_US = 20  # then it sleeps this long between looks (the kernel rounds it up)

# usleep from the C library, resolved by name when compiled code is linked (also from numba's
# disk cache: no address is baked into the code)
llvm_binding.add_symbol("usleep", ctypes.cast(ctypes.CDLL(None).usleep, ctypes.c_void_p).value)


def _slot(context, builder, arrty, arr, i):
    data = context.make_array(arrty)(context, builder, arr).data
    return builder.gep(data, [i])


@intrinsic
def atomic_add(typingctx, arr, i, v):
    """``arr[i] += v`` as one atomic step (sequentially consistent); returns the old value."""

    def codegen(context, builder, signature, args):
        a, idx, val = args
        ptr = _slot(context, builder, signature.args[0], a, idx)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return types.int64(arr, types.intp, types.int64), codegen


@intrinsic
def atomic_load(typingctx, arr, i):
    """``arr[i]``, read atomically (acquire: what was written before its store is visible)."""

    def codegen(context, builder, signature, args):
        a, idx = args
        ptr = _slot(context, builder, signature.args[0], a, idx)
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, types.intp), codegen


@intrinsic
def atomic_store(typingctx, arr, i, v):
    """``arr[i] = v`` atomically (release: everything written before it is visible first)."""

    def codegen(context, builder, signature, args):
        a, idx, val = args
        ptr = _slot(context, builder, signature.args[0], a, idx)
        builder.store_atomic(val, ptr, "release", 8)
        return context.get_dummy_value()

    return types.none(arr, types.intp, types.int64), codegen


@intrinsic
def _pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``); nothing elsewhere."""

    def codegen(context, builder, signature, args):
        triple = llvm_binding.get_process_triple()
        if triple.startswith(("x86_64", "i686", "i386")):
            fn = builder.module.declare_intrinsic("llvm.x86.sse2.pause", fnty=ir.FunctionType(
                ir.VoidType(), []))  # fmt: skip
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _usleep(typingctx, us):
    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.IntType(32), [ir.IntType(32)])
        fn = builder.module.globals.get("usleep") or ir.Function(builder.module, fnty, "usleep")
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()

    return types.none(types.int64), codegen


# counters of one phase: items claimed, items done, open (1: its inputs are ready)
CLAIMED, DONE, OPEN = 0, 1, 2
PHASE_WORDS = 8  # one 64-byte cache line per phase: the threads' claims do not share lines


@njit(inline="always")
def wait_open(counters, ph):
    """Wait until phase ``ph`` is open: spin a little, then nap.  (The phase's own word, read
    in the loop: numba hoists loop-invariant calls out of a ``prange`` body.)"""
    spins = 0
    while atomic_load(counters, ph * PHASE_WORDS + OPEN) == 0:
        if spins < SPIN_PAUSES:
            _pause()
            spins += 1
        else:
            _usleep(NAP_US)


@njit(inline="always")
def claim(counters, ph, chunk):
    """The first item of the next ``chunk`` items of phase ``ph`` (≥ the phase's size: none
    left)."""
    return atomic_add(counters, ph * PHASE_WORDS + CLAIMED, chunk)


@njit(inline="always")
def finish(counters, ph, n_done, n_items):
    """Record ``n_done`` items of phase ``ph`` done; True for the thread that finished its last
    item (it runs the serial work after the phase, then ``open_next``)."""
    return atomic_add(counters, ph * PHASE_WORDS + DONE, n_done) + n_done == n_items


@njit(inline="always")
def open_next(counters, ph):
    """Open phase ``ph + 1`` (everything written before is visible to whoever enters it)."""
    atomic_store(counters, (ph + 1) * PHASE_WORDS + OPEN, 1)


class Phases:
    """The counters of one step of ``n_phases`` phases (see the module docstring): fresh ones
    for every step."""

    def __init__(self, n_phases: int) -> None:
        # one more line: the last phase's finisher opens a phase no one enters
        self.counters = np.zeros((n_phases + 1) * PHASE_WORDS, np.int64)
        self.counters[OPEN] = 1  # phase 0 is open
