"""Drop-in replacements for other packages' sky-matching interfaces.

* `skyeq.compat.stcal`: the names and call conventions of ``stcal.skymatch``
  (stcal 1.20.0), computed by skyeq's engine.
"""
