"""einderive: backward passes of index-notation expressions, derived symbolically and verified.

>>> import einderive as ed
>>> d = ed.derive("Y[i,j] = W[m,n]*X[s*i+m-1, s*j+n-1]")
>>> print(d.pullbacks["X"].notation())
dX[p, q] = sum_{i,j}(dY[i, j] * W[p - s*i + 1, q - s*j + 1])
"""

from .api import Derivation, Pullback, compile, derive, evaluate, vjp
from .errors import (
    ArgumentError,
    BackendMissingError,
    EinderiveError,
    ExtentError,
    ImplicitSumWarning,
    IndexNotationError,
    NotationSyntaxError,
    VerificationError,
)
from .higher import derive_twice, verify_twice
from .jvp import JVP, derive_jvp, jvp, verify_jvp
from .verify import Report, verify

__version__ = "0.1.0"

__all__ = [
    "ArgumentError",
    "BackendMissingError",
    "Derivation",
    "JVP",
    "EinderiveError",
    "ExtentError",
    "ImplicitSumWarning",
    "IndexNotationError",
    "NotationSyntaxError",
    "Pullback",
    "Report",
    "VerificationError",
    "compile",
    "derive",
    "derive_jvp",
    "derive_twice",
    "evaluate",
    "jvp",
    "verify",
    "verify_jvp",
    "verify_twice",
    "vjp",
]
