"""``python -m mutransfer``: the same as the ``mutransfer`` command."""

from mutransfer.cli import main

raise SystemExit(main())
