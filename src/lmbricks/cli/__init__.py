"""The ``lmbricks`` console script: thin typed commands over the library, one module per group."""
