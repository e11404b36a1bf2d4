"""Stable, vectorised 64-bit hashing used for row keys, group keys, splits and hash buckets.

The same value hashes to the same number in every process, on every machine and in every run
(no Python ``hash()``, which is salted per process), so splits are reproducible and a hashed
categorical bucket is identical at training and serving time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# A fixed 16-byte SipHash key; changing it would move every hashed bucket and split.
HASH_KEY = "rayline-hash-v1!"
_MASK63 = np.uint64((1 << 63) - 1)


def hash_strings(values: np.ndarray | pd.Series | list[object]) -> np.ndarray:
    """SipHash-2-4 of each value's string form (None/NaN hash like the string "None")."""
    arr = np.asarray(pd.Series(values, dtype=object).astype(str).to_numpy(), dtype=object)
    return pd.util.hash_array(arr, hash_key=HASH_KEY, categorize=True).astype(np.uint64)


def mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective avalanche of uint64 values."""
    z = np.asarray(x, dtype=np.uint64).copy()
    with np.errstate(over="ignore"):
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return z


def to_int63(x: np.ndarray) -> np.ndarray:
    """Fold uint64 hashes into non-negative int64 (Arrow/Parquet friendly)."""
    return (np.asarray(x, dtype=np.uint64) & _MASK63).astype(np.int64)


def unit_interval(keys: np.ndarray, seed: int) -> np.ndarray:
    """Map integer keys to reproducible uniform floats in [0, 1), different for each seed."""
    with np.errstate(over="ignore"):
        salted = np.asarray(keys).astype(np.uint64) ^ mix64(np.array([seed], dtype=np.uint64))[0]
    return (mix64(salted) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
