"""Attached or detached SSH runs for the benchmark's next coordinations. Run inside the
product's settings: `python -m bench.ssh_settings detach|attach|check` prints JSON
{"supported": bool, "detach": value stored or null}.

The switch is the config file's `ssh_settings.detach` (DeploymentDefaults.detach, which
each coordination snapshots when it starts): this writes that one key into the stored
`ssh_settings` block as `import_environments` would, leaving its other keys. A product
without the switch (DeploymentDefaults has no `detach`) is left alone and says so."""

import json
import sys


def switch(action: str) -> dict:
    from environments.config import DeploymentDefaults
    from environments.models import SettingsBlock

    supported = "detach" in DeploymentDefaults.__dataclass_fields__
    block, _ = SettingsBlock.objects.get_or_create(name=SettingsBlock.Name.SSH)
    if supported and action in ("detach", "attach"):
        block.values = {**block.values, "detach": action == "detach"}
        block.save(update_fields=["values", "updated_at"])
    return {"supported": supported, "detach": block.values.get("detach")}


def main() -> None:
    import django

    if len(sys.argv) != 2 or sys.argv[1] not in ("detach", "attach", "check"):
        sys.exit("usage: python -m bench.ssh_settings detach|attach|check")
    django.setup()
    print(json.dumps(switch(sys.argv[1])))


if __name__ == "__main__":
    main()
