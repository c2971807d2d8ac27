"""The type of ``self.hparams`` in our modules and DataModules, for the type checker only.

Lightning types ``hparams`` as ``AttributeDict | MutableMapping``; after ``save_hyperparameters()`` it is
always an :class:`~lightning.fabric.utilities.data.AttributeDict`, whose keys read as attributes
(``self.hparams.lr``). :class:`AttributeHparams`, listed before the Lightning base class, tells the type
checker so. It adds nothing at run time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lightning.fabric.utilities.data import AttributeDict


class AttributeHparams:
    if TYPE_CHECKING:

        @property
        def hparams(self) -> AttributeDict: ...
