"""litdata, imported with its version check off: import it from here, never directly.

Every ``litdata.StreamingDataset`` (and ``litdata.optimize``) may ask the Python package index whether
a newer litdata exists (a web request, up to 30 s, on every process and DataLoader worker). Offline
machines and clusters without internet must not wait for it, so this module sets
``LITDATA_DISABLE_VERSION_CHECK=1`` with ``os.environ.setdefault`` *before* it imports litdata, which
reads the variable once, at import. A value the user exported first wins (``=0`` turns the check
back on). When something imported litdata before lightning-transfer did, the variable comes too late:
export it in the job's environment to be sure.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITDATA_DISABLE_VERSION_CHECK", "1")

import litdata  # after the variable: litdata reads it at import

__all__ = ["litdata"]
