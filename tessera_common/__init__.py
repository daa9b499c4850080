"""Small helpers the webhook, the DRA driver and the host installer share.

* :mod:`tessera_common.files`: durable, atomic file writes (temp file, fsync, rename, fsync dir).
* :mod:`tessera_common.safefs`: reading, writing and removing in directories a tenant can write to
  (no link followed, no FIFO waited on, any mode and depth removed).
* :mod:`tessera_common.quantity`: Kubernetes quantities, parsed exactly and bounded, and formatted.
* :mod:`tessera_common.logfmt`: one structured log line per event, JSON or ``key=value`` text.
* :mod:`tessera_common.flags`: booleans and comma lists given as text (flags, env vars).
* :mod:`tessera_common.slicefields`: a published device's attributes and capacities, plain or qualified names.
"""
