"""The ``mailsupport`` command line: administration and scripting."""
