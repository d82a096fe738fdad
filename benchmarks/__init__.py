"""The benchmark harness of syft_magics: ``python -m benchmarks [--full] [--peers] [--json PATH] [--only NAMES]``.

See benchmarks/README.md. Not part of the installed package.
"""
