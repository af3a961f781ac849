"""boto3 helpers (a piece). boto3 is imported only inside these modules. ``leftovers``: what of a
lab's network (stage 1) and identity (stage 2) is still in the cloud, for both targets.

May import: other pieces and the base; never targets, stages or the CLI.
"""
