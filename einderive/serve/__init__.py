"""``einderive serve``: a local page to type an expression and see its backward pass.

The page shows the pullbacks in LaTeX (KaTeX, shipped inside the package), the
steps, the convolution calls, the emitted code, the Jacobian as a picture and
the numerical verification; the server answers it from worker processes with a
time limit (see ``server.py``, ``workers.py``, ``work.py``).
"""

from .server import PageServer, make_server, serve

__all__ = ["PageServer", "make_server", "serve"]
