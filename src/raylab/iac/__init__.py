"""Infrastructure as code (a piece): the Terraform runner (``terraform``) and the IaC gates (``gates``).

May import: other pieces and the base; never targets, stages or the CLI.
"""
