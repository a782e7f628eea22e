"""Settings for the whole suite.

Hypothesis: no per-example deadline. Its default (200 ms) is a wall-clock assertion, and on a
loaded two-core CI machine a slow example fails as "Unreliable test timings" although nothing
is wrong; speed is measured by `cipherseg bench`, not by tests. Examples stay random (each
run explores new inputs); a failure prints the blob that reproduces it.
"""

from hypothesis import settings

settings.register_profile("cipherseg", deadline=None, print_blob=True)
settings.load_profile("cipherseg")
