"""The sky methods: their names (the one home of `METHODS`), and how they combine.

``local``, ``global``, ``match``, ``global+match`` and ``user`` are the methods of the
JWST ``skymatch`` step; `skyeq.match_sky` takes them as ``method=`` and a `SkyResult`
carries one as BKGMETH.
"""

from __future__ import annotations

__all__ = ["METHODS"]

#: The sky methods, as `skyeq.match_sky` takes them and BKGMETH records them.
METHODS = ("local", "global", "match", "global+match", "user")
