"""The labels every mask in segpets holds: (H, W) uint8 with :data:`BACKGROUND`, :data:`PET`
(the foreground) and :data:`IGNORE_INDEX`, a pixel that counts in neither the loss nor any
metric. Datasets map their own files' values onto these (``segpets.data``)."""

BACKGROUND = 0
PET = 1
IGNORE_INDEX = 255  # mask value of pixels left out of the loss and every metric
