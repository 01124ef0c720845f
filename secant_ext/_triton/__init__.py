"""Triton kernels of the three phases, one file per phase; ``secant_ext.triton_kernels``
is the public face (the four functions of ``secant_ext.reference`` plus
``num_partial_rows``)."""
