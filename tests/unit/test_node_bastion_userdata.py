"""Finding 12: the bastion is an SSH hop; its user data installs nothing (never `pip install raylab`)."""

from __future__ import annotations

import re

from tests.unit.test_infra_cfn import VPC


def _user_data(text: str) -> str:
    """The UserData block of the bastion's launch template, as written in the template."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == "UserData:")
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = []
    for ln in lines[start + 1:]:
        if ln.strip() and len(ln) - len(ln.lstrip()) <= indent:
            break
        block.append(ln)
    return "\n".join(block)


def test_bastion_user_data_installs_no_raylab_and_no_python_packages() -> None:
    ud = _user_data(VPC)
    assert "#!/bin/bash" in ud  # the block was found
    assert not re.search(r"\bpip3?(\.\d+)?\s+install\b|-m\s+pip\b", ud), ud
    commands = [ln for ln in ud.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    assert not [ln for ln in commands if "raylab" in ln.replace("raylab-lab", "")], ud
    assert not [ln for ln in commands if re.search(r"\b(dnf|yum|apt(-get)?)\s+install\b", ln)], ud


def test_no_template_parameter_names_a_package_to_install() -> None:
    assert "RaylabPipSpec" not in VPC
