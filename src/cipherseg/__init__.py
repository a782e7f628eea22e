"""cipherseg: customer segmentation and precision marketing on encrypted data.

>>> import cipherseg
>>> cipherseg.__version__
'0.1.0'
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["EncryptedKMeans", "EncryptedScorer", "JointKMeans", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import cipherseg` must stay cheap (the CLI and the web app import it).
    if name == "EncryptedKMeans":
        from cipherseg.analytics.estimators import EncryptedKMeans

        return EncryptedKMeans
    if name == "EncryptedScorer":
        from cipherseg.analytics.scoring import EncryptedScorer

        return EncryptedScorer
    if name == "JointKMeans":
        from cipherseg.protocols.joint.estimator import JointKMeans

        return JointKMeans
    raise AttributeError(f"module 'cipherseg' has no attribute {name!r}")
