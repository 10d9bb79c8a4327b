"""``python -m mailsupport``: the same as the ``mailsupport`` command."""

from mailsupport.cli.main import main

main()
