"""Storage locations as URIs: one place that turns a location into a pyarrow filesystem.

A location is a local path (``./storage``, ``/data/rayline``), a ``file://`` URI, or an object
store / distributed filesystem URI (``s3://bucket/prefix``, ``gs://...``, ``hdfs://...``).
:func:`normalize` is applied once, on the driver, to the storage root; every process (driver,
Ray Data tasks, Train workers, Serve replicas) then opens the same string with
:func:`filesystem` and reaches the same store.

For ``s3://`` the endpoint is part of the normalized URI: pyarrow's S3FileSystem does not read
``AWS_ENDPOINT_URL`` itself, so :func:`normalize` adds it (and the region) as the query options
pyarrow understands (``endpoint_override``, ``scheme``, ``region``). The URI therefore carries the
address to processes on other nodes, whose environment may differ. Credentials never go into the
URI: every process takes them from its own environment (``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, a profile, or the node's instance role;
``GOOGLE_APPLICATION_CREDENTIALS`` for gs://), as the cloud SDKs do.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow.fs as pafs

_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")
# Options a spec's ``storage_options`` may set, as pyarrow's S3 URI query names them.
S3_OPTIONS = ("endpoint_override", "scheme", "region")


class StorageLocationError(ValueError):
    """A storage location that cannot be used (bad URI, unknown option); names the location."""


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a local path."""
    return bool(_URI.match(location))


def is_local(location: str) -> bool:
    """Whether ``location`` is on this machine's filesystem (a path or a ``file://`` URI)."""
    return not is_uri(location) or location.startswith("file://")


def normalize(
    location: str,
    options: Mapping[str, str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> str:
    """The location every process can open: a local path made absolute; an ``s3://`` URI with
    its endpoint and region (from ``options``, else the URI, else ``AWS_ENDPOINT_URL[_S3]`` /
    ``AWS_REGION``) as query options. Other URIs are returned as they are."""
    options = dict(options or {})
    if not is_uri(location):
        if options:
            raise StorageLocationError(
                f"storage_options {sorted(options)} apply to s3:// storage, not to the local "
                f"path {location!r}"
            )
        return os.path.abspath(os.path.expanduser(location))
    parts = urlsplit(location)
    if parts.scheme != "s3":
        if options:
            raise StorageLocationError(
                f"storage_options apply to s3:// storage, not to {parts.scheme}:// ({location})"
            )
        return location
    unknown = sorted(set(options) - {"endpoint_url", *S3_OPTIONS})
    if unknown:
        raise StorageLocationError(
            f"storage_options: unknown option(s) {unknown} (known: endpoint_url, region)"
        )
    query = dict(parse_qsl(parts.query))
    endpoint = options.get("endpoint_url") or next(
        (environ[e] for e in ENDPOINT_ENVS if environ.get(e)), None
    )
    if endpoint and "endpoint_override" not in query:
        query.update(_endpoint_query(endpoint, location))
    for k in S3_OPTIONS:
        if options.get(k):
            query[k] = options[k]
    region = next((environ[e] for e in REGION_ENVS if environ.get(e)), None)
    if region and "region" not in query:
        query["region"] = region
    if not parts.netloc:
        raise StorageLocationError(
            f"{location}: an s3:// location needs a bucket (s3://bucket/...)"
        )
    return urlunsplit(
        parts._replace(path=parts.path.rstrip("/"), query=urlencode(sorted(query.items())))
    )


def _endpoint_query(endpoint: str, location: str) -> dict[str, str]:
    """``http://host:port`` -> endpoint_override host:port and scheme http."""
    e = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    if e.scheme not in ("http", "https") or not e.netloc:
        raise StorageLocationError(
            f"{location}: endpoint {endpoint!r} is not http(s)://host[:port]"
        )
    return {"endpoint_override": e.netloc, "scheme": e.scheme}


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(the pyarrow filesystem, the path inside it) for a location (see :func:`normalize`)."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    if location.startswith("s3://"):  # a URI written by hand (serve configs): this env's endpoint
        location = normalize(location)
    try:
        fs, path = pafs.FileSystem.from_uri(location)
    except (ValueError, OSError) as e:
        raise StorageLocationError(f"{display(location)}: cannot open ({e})") from None
    return fs, path.rstrip("/") or "/"


def join(location: str, *parts: str) -> str:
    """``location`` with ``parts`` appended to its path (a URI keeps its scheme and query)."""
    rel = [p.strip("/") for p in parts if p]
    if not is_uri(location):
        return os.path.join(location, *rel)
    u = urlsplit(location)
    return urlunsplit(u._replace(path=posixpath.join(u.path or "/", *rel)))


def parent(location: str) -> str:
    """The folder holding ``location``."""
    if not is_uri(location):
        return os.path.dirname(location.rstrip(os.sep)) or os.sep
    u = urlsplit(location)
    return urlunsplit(u._replace(path=posixpath.dirname(u.path.rstrip("/"))))


def basename(location: str) -> str:
    """The last part of ``location``'s path."""
    path = urlsplit(location).path if is_uri(location) else location
    return posixpath.basename(path.rstrip("/"))


def display(location: str) -> str:
    """``location`` for people: a URI without its query (endpoint options), else as it is."""
    if not is_uri(location):
        return location
    return urlunsplit(urlsplit(location)._replace(query=""))


def ray_storage(location: str) -> dict[str, Any]:
    """Ray Train / Tune's ``storage_path`` and ``storage_filesystem`` for a location: a local
    folder as a path, anything else as the path inside a pyarrow filesystem."""
    if not is_uri(location):
        return {"storage_path": os.path.abspath(location), "storage_filesystem": None}
    fs, path = filesystem(location)
    return {"storage_path": path, "storage_filesystem": fs}
