"""``emd report``: where a model's error mass goes, in one streaming pass.

:mod:`.job` runs the inputs through :mod:`.accumulate` (per-batch tallies, bounded
memory); :mod:`.content` turns the tallies into one JSON-ready document; :mod:`.render`
writes it as HTML (with :mod:`.figures`, matplotlib), Markdown or JSON.
"""
