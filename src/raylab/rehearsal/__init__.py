"""The AWS rehearsal: a twin that plays a real account (cloud rules, machines, the nodes' internet).

A piece beside ``aws``: ``world`` runs the account (moto with the cloud rules of ``cloud``, ``stacks``,
``fis``, ``metadata``) and a machine per instance (``machine``, ``uvcache``, ``internet``, ``catalog``).
May import: other pieces (``aws``, ``cluster``, ``datajob``) and the base (``errors``); never
``targets``, ``stages`` or ``cli`` (the AWS target reaches it only through ``enter``'s command line).
"""
