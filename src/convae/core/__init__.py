"""The bottom layer: errors, atomic file I/O, image writing, device and seeding, fault points.

Nothing here imports from the rest of convae, so every other layer may use it.
"""
