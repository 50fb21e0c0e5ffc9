"""The ``spool`` command line."""
