"""The AWS rehearsal: a twin that plays a real account (cloud rules, machines, the nodes' internet)."""
