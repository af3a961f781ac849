"""The room: an instructor's view over every lab in one account (issue 19).

``plan``, ``status`` and ``operators`` are pure decisions; ``inventory`` reads the account through
clients passed in (as ``raylab.plan.cost.live_prices`` does), so tests hand it moto's.
May import: other pieces (``aws``, ``cluster``, ``plan``) and the base (``context``, ``errors``,
``labid``); never ``targets``, ``stages`` or ``cli``.
"""
