"""``python -m bitrix_worker ...``: the same CLI as the ``bitrix-worker`` script (the demo uses it)."""

from .cli import main

if __name__ == "__main__":
    main()
