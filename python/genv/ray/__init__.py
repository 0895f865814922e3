"""Ray tasks in genv environments.

::

    import genv.ray

    @genv.ray.remote(num_gpus=0.5)
    def train():
        ...

Needs Ray (``pip install genv[ray]``).
"""

from .remote import remote

__all__ = ["remote"]
