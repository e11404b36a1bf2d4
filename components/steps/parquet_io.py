"""Ray datasets written to and read from a storage location (local folder or object store).

Ray Data appends to a folder that exists, so :func:`write_fresh` replaces the folder's contents.
Locally the new files go to a sibling folder renamed into place (readers see the old or the new
folder); in an object store, where there is no rename, the prefix is cleared and written in
place, and the caller's commit marker (a key file written last) says when it is complete.
"""

from __future__ import annotations

import os
import shutil
import uuid

import ray.data

from components import uris
from components.bundle import Storage


def write_fresh(ds: ray.data.Dataset, location: str) -> str:
    """Write ``ds`` as Parquet at ``location``, replacing whatever was there; the location."""
    if not uris.is_uri(location):
        tmp = f"{location}.tmp-{uuid.uuid4().hex[:8]}"
        ds.write_parquet(tmp)
        if os.path.isdir(location) and not os.path.islink(location):
            shutil.rmtree(location)
        elif os.path.lexists(location):
            os.remove(location)
        os.replace(tmp, location)
        return location
    Storage(uris.parent(location)).remove(uris.basename(location))
    fs, inner = uris.filesystem(location)
    ds.write_parquet(inner, filesystem=fs)
    return location


def read(location: str) -> ray.data.Dataset:
    """The Parquet dataset at ``location`` (lazy)."""
    if not uris.is_uri(location):
        return ray.data.read_parquet(location)
    fs, inner = uris.filesystem(location)
    return ray.data.read_parquet(inner, filesystem=fs)
